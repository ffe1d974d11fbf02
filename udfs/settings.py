"""The config system the pipeline (``jobs.config``) and the training recipes (``training.recipe``)
share: one strict pydantic base, one YAML reader, one ``--set dotted.key=value`` parser, one error
format, and where ``conf/`` is.

Spark-free and torch-free, so both halves import it (the training nodes install neither Spark nor
tree-sitter). ``conf/`` ships inside the distribution as the ``codemill_conf`` package
(pyproject.toml maps it), so an installed wheel finds its YAML on a cluster node or on Databricks;
in a checkout the checkout's own ``conf/`` is used.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A config file, recipe or override is invalid; the message names every bad key."""


class Strict(BaseModel):
    """Unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@cache
def conf_dir() -> Path:
    """The checkout's ``conf/`` when running from one, else the installed ``codemill_conf``."""
    local = REPO_ROOT / "conf"
    if (local / "pipeline.yaml").exists():
        return local
    from importlib.util import find_spec

    spec = find_spec("codemill_conf")  # a namespace package: conf/ holds no Python
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"no conf/ in {REPO_ROOT} and no codemill_conf package installed")
    return Path(list(spec.submodule_search_locations)[0])


def conf_path(path: str | Path) -> Path:
    """A path as a config names it: absolute, or relative to the working folder when it exists
    there, else ``conf/...`` inside ``conf_dir()`` (the recipes' ``conf/deepspeed/zero3.json``),
    else relative to the checkout."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    if p.parts and p.parts[0] == "conf":
        return conf_dir().joinpath(*p.parts[1:])
    return REPO_ROOT / p


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``, value parsed as YAML (``3``, ``[a, b]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    try:
        value: Any = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict:
    for item in overrides:
        data = deep_merge(data, parse_override(item))
    return data


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _fields(node: Any) -> dict[str, Any]:
    return getattr(node, "model_fields", None) or getattr(node, "__dataclass_fields__", {})


def _model_at(root: type, loc: tuple[Any, ...]) -> Any:
    """The model or dataclass that owns the last key of ``loc`` (for listing allowed keys)."""
    node: Any = root
    for part in loc[:-1]:
        fields = _fields(node)
        if part not in fields:
            return None
        f = fields[part]
        ann = f.annotation if hasattr(f, "annotation") else f.type
        node = ann if isinstance(ann, type) and (
            issubclass(ann, BaseModel) or dataclasses.is_dataclass(ann)) else None
        if node is None:
            return None
    return node


def describe(exc: ValidationError, root: type, title: str,
             tagged: dict[str, type] | None = None) -> str:
    """The one error format: ``title``, then one line per bad key, ``key: problem``; an unknown
    key lists the keys allowed where it stands. ``tagged``: discriminated-union tags that pydantic
    puts into the location (``ingest.sources.0.tree.path``) and the model each names."""
    tagged = tagged or {}
    lines = []
    for err in exc.errors():
        tags = [p for p in err["loc"] if isinstance(p, str) and p in tagged]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in tagged))
        key = ".".join(str(p) for p in loc)
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            owner = tagged[tags[0]] if tags else _model_at(root, loc)
            allowed = ", ".join(sorted(_fields(owner))) if owner is not None else "?"
            lines.append(f"{key}: unknown key; allowed keys here: {allowed}")
        elif not loc or err["type"] == "value_error":  # a check of ours: its message says why
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(msg if not key or msg.startswith(key) else f"{key}: {msg}")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return f"{title}:\n  " + "\n  ".join(lines)


def validate(model: type[BaseModel], data: dict[str, Any], title: str,
             tagged: dict[str, type] | None = None):
    """``model.model_validate(data)``, its errors as one ``ConfigError`` in the format above."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, model, title, tagged)) from None
