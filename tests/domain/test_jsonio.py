"""svc/domain/jsonio.py: orjson's JSON wherever orjson can write and read it exactly, Python's
json where a value holds an integer beyond orjson's 64 bits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from svc.domain import jsonio
from tests.domain.strategies import any_json, json_scalars

# integers of any width, those orjson cannot keep among them
wide_json = any_json(json_scalars | st.integers() | st.integers(min_value=2**63, max_value=2**70))


@given(any_json())
def test_what_orjson_writes_is_written_as_orjson_writes_it(value: Any) -> None:
    assert jsonio.dumps(value) == orjson.dumps(value)
    assert jsonio.loads(orjson.dumps(value)) == orjson.loads(orjson.dumps(value))


@given(wide_json)
@example({"n": 2**64, "m": -(2**63) - 1, "k": [2**100, 1.5, "x"]})
def test_any_integer_round_trips_exactly(value: Any) -> None:
    written = jsonio.dumps(value)
    assert jsonio.loads(written) == value
    assert json.loads(written) == value  # standard JSON, whoever reads it


def test_a_wide_integer_is_written_in_compact_utf8_json_like_orjson() -> None:
    value = {"n": 2**64, "text": "é ☃", "list": [1, None, True], "nan": float("nan")}
    assert jsonio.dumps(value) == '{"n":18446744073709551616,"text":"é ☃","list":[1,null,true],"nan":null}'.encode()


def test_uuids_and_datetimes_beside_a_wide_integer_are_written_as_orjson_writes_them() -> None:
    moment = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)
    uuid = UUID(int=7)
    written = jsonio.dumps({"n": 2**64, "at": moment, "id": uuid})
    assert json.loads(written) == {"n": 2**64, "at": moment.isoformat(), "id": str(uuid)}
    assert orjson.dumps({"at": moment, "id": uuid}) == b'{"at":"%s","id":"%s"}' % (
        moment.isoformat().encode(), str(uuid).encode()
    )


def test_a_float_that_large_is_read_as_the_float_it_is() -> None:
    assert jsonio.loads(b'{"f": 1e300, "g": -2.5e19}') == {"f": 1e300, "g": -2.5e19}


@pytest.mark.parametrize("value", [{"set": {1, 2}}, {1: "not a str key"}, object()])
def test_what_orjson_refuses_for_another_reason_raises_orjsons_error(value: Any) -> None:
    with pytest.raises(TypeError):
        jsonio.dumps(value)
    with pytest.raises(TypeError):
        jsonio.dumps({"wide": 2**64, "bad": value})
