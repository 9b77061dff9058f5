"""The service's Redis client packs commands with hiredis (svc.connections): the same bytes
reach Redis as with redis-py's own packing, for every kind of argument the state layer sends,
and bad arguments fail as redis-py's do. It also takes replies already whole in its buffer
without arming a timeout: what it reads is what redis-py reads, errors included, and a reply
that keeps the client waiting is still bounded by the socket timeout."""

from __future__ import annotations

import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from svc.config import Settings
from svc.connections import PackedCommand, _pack, bulk_strings, hiredis_packing, redis_client

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


@given(st.lists(arguments, max_size=8))
@settings(max_examples=300)
def test_bulk_strings_are_the_arguments_hiredis_packs(args: list[object]) -> None:
    """What the engine packs ahead (svc/connections.bulk_strings) is hiredis's packing."""
    command = (b"ECHO", *args)
    assert _pack(command) == b"*%d\r\n%b" % (len(command), bulk_strings(command))


async def test_a_packed_command_goes_out_as_it_is(redis_client: redis.asyncio.Redis) -> None:
    echo = b"*2\r\n$4\r\nECHO\r\n$3\r\nh\xc3\xa9\r\n"
    assert _pack(("ECHO", PackedCommand(echo))) == echo
    pipe = redis_client.pipeline(transaction=False)
    pipe.execute_command("ECHO", PackedCommand(echo))
    pipe.execute_command("ECHO", "after")
    assert await pipe.execute() == ["hé".encode(), b"after"]


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


async def test_replies_read_from_the_buffer_are_redis_pys_replies(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:replies"
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(200):
            pipe.rpush(key, i)
        pipe.lrange(key, 0, 2).hset(f"{key}:h", "f", "v").get(f"{key}:none")
        pipe.eval("return {1, 'a'}", 0)
        replies = await pipe.execute()
    assert replies[:200] == list(range(1, 201))
    assert replies[200:] == [[b"0", b"1", b"2"], 1, None, [1, b"a"]]


async def test_an_error_reply_in_a_pipeline_stays_in_its_place(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:errors"
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.set(key, "text").incr(key).get(key)
        first, error, last = await pipe.execute(raise_on_error=False)
    assert (first, last) == (True, b"text")
    assert isinstance(error, ResponseError) and "not an integer" in str(error)
    with pytest.raises(ResponseError, match="not an integer"):
        await redis_client.incr(key)


async def test_a_reply_that_keeps_the_client_waiting_still_times_out(redis_url: str) -> None:
    client = redis_client(Settings(redis_url=redis_url, dependency_timeout_s=0.1))
    try:
        async with client.pipeline(transaction=False) as pipe:
            # the server takes 0.3 s over the second command: each try waits 0.1 s, then fails
            pipe.ping().execute_command("DEBUG", "SLEEP", "0.3")
            with pytest.raises(RedisTimeoutError):
                await pipe.execute()
    finally:
        await client.aclose()
