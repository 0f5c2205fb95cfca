"""``kws train --set SECTION.FIELD=VALUE``: any value of the run's config (``config.RunConfig``) that
the flags do not cover, read as a Python literal of the field's type and checked as every config is.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any

from .config import RunConfig
from .errors import ConfigError


def apply_overrides(cfg: RunConfig, items: list[str], fixed: tuple[str, ...] = ()) -> RunConfig:
    """``kws train --set SECTION.FIELD=VALUE`` (repeatable): any config value the flags do not
    cover, e.g. ``features.log_eps=1e-4``, ``train.augment.vtlp=0.8,1.25``, ``train.unknown_fraction=0.07``.
    VALUE is a Python literal of the field's type; ranges are checked as for any config. Sections
    in ``fixed`` (with --init: features, model) cannot be set."""
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        path = key.split(".")
        if not sep or not text.strip():
            raise ConfigError(f"--set {item}: expected SECTION.FIELD=VALUE, e.g. train.augment.reverb_prob=0.5")
        if path[0] not in ("features", "model", "train") or len(path) < 2:
            raise ConfigError(f"--set {key}: must start with features., model. or train. and name a field")
        if path[0] in fixed:
            raise ConfigError(f"--set {key}: fine-tuning keeps the --init model's {path[0]}")
        try:
            cfg = _set_field(cfg, path, text.strip(), key)
        except ConfigError as e:
            raise ConfigError(str(e) if str(e).startswith("--set ") else f"--set {key}: {e}") from None
    return cfg


def _set_field(obj: Any, path: list[str], text: str, key: str) -> Any:
    fields = [f.name for f in dataclasses.fields(obj)]
    if path[0] not in fields:
        raise ConfigError(f"--set {key}: {type(obj).__name__} has no field '{path[0]}' (fields: {', '.join(fields)})")
    cur = getattr(obj, path[0])
    if dataclasses.is_dataclass(cur) != (len(path) > 1):
        what = "a section: name one of its fields" if len(path) == 1 else "a value, not a section"
        raise ConfigError(f"--set {key}: '{path[0]}' is {what}")
    value = _set_field(cur, path[1:], text, key) if len(path) > 1 else _parse_value(text, cur, key)
    return dataclasses.replace(obj, **{path[0]: value})


def _parse_value(text: str, cur: Any, key: str) -> Any:
    if isinstance(cur, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"--set {key}: cannot read '{text}' as a value like {cur!r}") from None
    if isinstance(cur, tuple) and isinstance(v, (list, tuple)):
        v = tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) and any(isinstance(c, float) for c in cur)
                  else x for x in v)
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and (not cur or len(v) == len(cur))
    elif isinstance(cur, float) and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    else:
        ok = type(v) is type(cur)
    if not ok:
        raise ConfigError(f"--set {key}: '{text}' is not a value like {cur!r}")
    return v
