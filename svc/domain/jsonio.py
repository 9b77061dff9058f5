"""JSON in and out of the engine's path, exact for any integer an event may hold.

orjson (fast, and what the hot path uses) keeps integers exact only within -2^63 .. 2^64 - 1:
it reads a wider one as a float, losing digits, and refuses to write one (TypeError). An event
is valid with any integer in its payload (SEMANTICS 2.2; Prefect, in Python, keeps them
exact), and its JSON travels through the scripts' arguments, the outboxes, composite records
and the published messages. `dumps` and `loads` are orjson's, falling back to Python's own
json where orjson would fail or lose digits, so such an event is evaluated and fired like
any other instead of failing its whole batch on every redelivery."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

# orjson reads an integer beyond 64 bits as a float, at least this large in magnitude.
WIDE = 2.0**63


def dumps(value: Any) -> bytes:
    """`orjson.dumps(value)`, or the same JSON written by Python's json where `value` holds
    an integer orjson cannot write. UUIDs and datetimes are written as orjson writes them."""
    try:
        return orjson.dumps(value)
    except TypeError:
        if not _holds_an_integer_orjson_cannot_write(value):
            raise  # orjson's own error for anything else it refuses
        return _dumps_exactly(value)


def loads(data: bytes | str) -> Any:
    """`orjson.loads(data)`, or Python's json's reading where orjson read a number as a
    float that may have been an integer beyond 64 bits (then kept exact)."""
    value = orjson.loads(data)
    if may_hold_a_wide_integer(value):
        return json.loads(data)
    return value


def may_hold_a_wide_integer(value: Any) -> bool:
    """Does a value orjson read hold a float as large as an integer orjson could not keep
    exact (a wide integer, or a float that large: either way, worth reading again)?"""
    return _any_leaf(value, _wide_float)


def _wide_float(item: Any) -> bool:
    return type(item) is float and (item >= WIDE or item <= -WIDE)


# What orjson writes of integers: -2^63 .. 2^64 - 1.
_SMALLEST = -(2**63)
_LARGEST = 2**64 - 1


def _holds_an_integer_orjson_cannot_write(value: Any) -> bool:
    return _any_leaf(value, _unwritable_int)


def _unwritable_int(item: Any) -> bool:
    return type(item) is int and not _SMALLEST <= item <= _LARGEST


def _any_leaf(value: Any, test: Callable[[Any], bool]) -> bool:
    """Does `test` hold for a value inside `value` (dicts' values, lists' and tuples' items)?"""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif test(item):
            return True
    return False


def _dumps_exactly(value: Any) -> bytes:
    """What orjson.dumps writes, by Python's json: compact, UTF-8, non-finite floats as null,
    UUIDs and datetimes as strings."""
    text = json.dumps(
        _finite(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False,
        default=_as_orjson_writes,
    )  # fmt: skip
    return text.encode()


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, as orjson writes them (null); keys that
    are not strings refused, as orjson refuses them (Python's json would write them)."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise TypeError("Dict key must be str")
        return {k: _finite(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_finite(v) for v in value]
    if kind is float and not math.isfinite(value):
        return None
    return value


def _as_orjson_writes(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
