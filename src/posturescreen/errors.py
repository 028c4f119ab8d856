"""The one base class of every error a user can cause and fix (a config, a manifest, a
photo, a bundle, a run folder, a full disk). The CLI turns any of them into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PostureScreenError(Exception):
    """An input or environment problem the user can fix; the message says what and how."""


class MissingExtraError(PostureScreenError):
    """An optional part (an install extra) is needed and not installed; says how to get it."""

    def __init__(self, what: str, extra: str, package: str):
        super().__init__(f"{what} needs the optional package {package!r}, which is not "
                         f"installed: pip install 'posturescreen[{extra}]'")


class ConfigError(PostureScreenError, ValueError):
    """A config file or override that cannot be used; the message names the field."""
