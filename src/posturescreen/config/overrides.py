"""Config overrides (`--set key.path=value`, read as YAML) and the wording of config
errors: every message names the key, and never repeats a large input whole."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from posturescreen.config.safe_yaml import YamlInputError, load_yaml
from posturescreen.errors import ConfigError


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(
            f"  {loc[:80]}: {msg}"
            + (
                f" (got {short_repr(e['input'])})"
                if "input" in e
                and e["type"] not in ("extra_forbidden", "value_error")
                and not isinstance(e["input"], dict)
                else ""
            )
        )
    shown = lines[:21]  # a random file can have thousands of problems
    if len(lines) > 21:
        shown.append(f"  ... and {len(lines) - 21} more")
    return "\n".join(shown)


def short_repr(value: Any, limit: int = 80) -> str:
    """An input as an error shows it: never the whole of a large value."""
    text = repr(value) if not isinstance(value, list | tuple | set) or len(value) < 20 \
        else f"<{type(value).__name__} of {len(value)} items>"
    return text if len(text) <= limit else text[:limit] + "…"


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=3` -> ("train.epochs", 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {short_repr(text)} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except YamlInputError as e:
        raise ConfigError(f"override {short_repr(text)}: {e}") from e
    return key.strip(), value


def apply_model_override(tree: dict[str, Any], key: str, value: Any,
                         *, default_models: list[dict[str, Any]]) -> None:
    """`models.pretrained=none` sets it on every model (CNN fields on CNNs only); handy for
    offline runs of paper.yaml."""
    models = tree.get("models")
    if models is None:
        models = default_models
        tree["models"] = models
    if not isinstance(models, list):
        return  # validation names the wrong type of `models`
    cnn_only = key in ("pretrained", "image_size")
    for m in models:
        if isinstance(m, dict) and not (cnn_only and m.get("kind", "cnn") != "cnn"):
            m[key] = value
