"""YAML that a user (or a collaborator) gives us, read with limits.

`yaml.safe_load` already refuses Python tags; on top of that a document must be small once
its aliases are expanded (a few hundred bytes of nested aliases otherwise expand to
gigabytes inside validation and error messages), must not refer to itself, and must not be
nested deeper than any config needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from posturescreen.errors import PostureScreenError
from posturescreen.files import InputFileError, read_input_file

MAX_YAML_BYTES = 1 << 20
MAX_EXPANDED_NODES = 10_000  # the paper's config has about 80
MAX_DEPTH = 50

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlInputError(PostureScreenError, ValueError):
    """YAML that is not valid or is too large once expanded; the message says which."""


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded (shared nodes counted each time
    they are used), without expanding anything; refuses cycles and deep nesting."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, depth, children done?)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlInputError("an alias refers to the node that contains it")
        if depth > MAX_DEPTH:
            raise YamlInputError(f"nested deeper than {MAX_DEPTH} levels")
        _no_repeated_keys(node)
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node))
    return sizes[id(root)]


def _no_repeated_keys(node: yaml.Node) -> None:
    # a key written twice silently keeps the last value; a typo must not pass unnoticed
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value != "<<":
            if key.value in seen:
                raise YamlInputError(f"key {key.value[:40]!r} is given twice (line "
                                     f"{key.start_mark.line + 1})")
            seen.add(key.value)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    """The Python value of a YAML document, or YamlInputError (the message never repeats
    the document)."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlInputError(f"larger than {MAX_YAML_BYTES >> 20} MB")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_EXPANDED_NODES:
            raise YamlInputError(f"more than {MAX_EXPANDED_NODES} values once its aliases "
                                 "(*name) are expanded; write the values out instead")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise YamlInputError(f"not valid YAML: {_short(e)}") from None
    except RecursionError:
        raise YamlInputError(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _short(err: yaml.YAMLError, limit: int = 300) -> str:
    text = " ".join(str(err).replace('in "<unicode string>",', "at").split())
    return text if len(text) <= limit else text[:limit] + "…"


def read_yaml_file(path: Path) -> Any:
    """load_yaml of a file's text; a missing, unreadable or non-UTF-8 file is named."""
    try:
        raw = read_input_file(path, MAX_YAML_BYTES, expected="a YAML file")
    except InputFileError as e:
        raise YamlInputError(str(e)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise YamlInputError(f"not UTF-8 text (bad byte 0x{raw[e.start]:02x} on line {line}); "
                             "save it as UTF-8") from None
    return load_yaml(text)
