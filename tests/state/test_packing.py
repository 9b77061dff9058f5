"""The service's Redis client packs commands with hiredis (svc.connections): the same bytes
reach Redis as with redis-py's own packing, for every kind of argument the state layer sends,
and bad arguments fail as redis-py's do."""

from __future__ import annotations

import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from svc.connections import _pack, hiredis_packing

arguments = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@given(st.lists(arguments, min_size=1, max_size=8))
@settings(max_examples=300)
def test_packs_the_bytes_redis_py_packs(args: list[object]) -> None:
    command = (b"ECHO", *args)
    assert _pack(command) == b"".join(Connection().pack_command(*command))


def test_a_command_name_of_several_words_is_split() -> None:
    assert _pack(("CLIENT SETNAME", "x")) == b"".join(
        Connection().pack_command("CLIENT SETNAME", "x")
    )


def test_buffers_are_packed_as_bytes() -> None:
    assert _pack((b"ECHO", bytearray(b"ab"), memoryview(b"cd"))) == _pack((b"ECHO", b"ab", b"cd"))


@pytest.mark.parametrize("bad", [None, True, object(), [1]])
def test_an_argument_redis_cannot_take_is_a_data_error(bad: object) -> None:
    with pytest.raises(DataError):
        _pack((b"SET", b"k", bad))


def test_pipelines_pack_every_command_once() -> None:
    packing = hiredis_packing(Connection)()
    packed = b"".join(packing.pack_commands([(b"SET", "k", 1), (b"GET", "k")]))
    assert packed == _pack((b"SET", "k", 1)) + _pack((b"GET", "k"))


async def test_the_service_client_round_trips_through_redis(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    assert "Hiredis" in redis_client.connection_pool.connection_class.__name__
    key = f"{key_prefix}:packing"
    value = "événement \x00 ✓".encode() * 1000
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.set(key, value).get(key).incrbyfloat(f"{key}:n", 1.25).eval("return ARGV[1]", 0, "é")
        assert await pipe.execute() == [True, value, 1.25, "é".encode()]
