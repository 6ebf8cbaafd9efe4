"""orjson with bulkprov's option flags set in exactly one place."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes (non-str dict keys allowed)."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def dumps_sorted(obj: Any) -> bytes:
    """Serialise with sorted keys: stable bytes for hashing and plan files."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON (raises :data:`JSONDecodeError`, a ValueError)."""
    return orjson.loads(data)
