"""The one TOML writer of gkdcn (``tomli-w``; reading is :mod:`tomllib`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w


def _drop_none(value: Any) -> Any:
    # TOML has no null: a missing key is how a config says "not set".
    if isinstance(value, Mapping):
        return {str(k): _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def to_toml(data: Mapping[str, Any]) -> str:
    """Plain data (nested tables of scalars and lists, e.g. a study config) as TOML text;
    ``None`` values are left out."""
    return tomli_w.dumps(_drop_none(data))
