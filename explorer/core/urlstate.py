"""Settings <-> URL query parameters: typed parsing with clear refusals, and compact encoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from explorer.core.config import ConfigError, shown


@dataclass(frozen=True)
class Param:
    """One setting in a URL: its type and default (tuples are comma-separated lists)."""

    kind: type  # bool, int, float, str or tuple
    default: Any
    item: type = str  # element type of a tuple


def _parse_one(name: str, p: Param, raw: str) -> Any:
    try:
        if p.kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if p.kind is tuple:
            return tuple(p.item(v) for v in raw.split(",") if v != "") if raw else ()
        return p.kind(raw)
    except ValueError:
        what = f"a list of {p.item.__name__}" if p.kind is tuple else p.kind.__name__
        raise ConfigError(f"URL parameter {name}={shown(raw)} is not a valid {what}") from None


def parse_params(schema: Mapping[str, Param], params: Mapping[str, str]) -> dict[str, Any]:
    """Defaults overridden by the URL's values; unknown names and malformed values raise ConfigError."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ConfigError(f"unknown URL parameter(s): {', '.join(unknown)}")
    values = {k: p.default for k, p in schema.items()}
    for name, raw in params.items():
        values[name] = _parse_one(name, schema[name], str(raw))
    return values


def encode_params(schema: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, str]:
    """Only the settings that differ from their defaults, as strings (short links)."""
    out: dict[str, str] = {}
    for name, p in schema.items():
        v = values.get(name, p.default)
        if v == p.default:
            continue
        if p.kind is bool:
            out[name] = "1" if v else "0"
        elif p.kind is tuple:
            out[name] = ",".join(str(x) for x in v)
        else:
            out[name] = f"{v:g}" if isinstance(v, float) else str(v)
    return out
