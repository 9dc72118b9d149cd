"""Commands packed by hiredis are byte for byte what redis-py's own packer sends."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from prodio.session import RedisSessionStore, SessionTimeouts
from prodio.session.redis_packing import HiredisPacking, with_hiredis_packing
from tests.redis_server import RedisServer

TIMEOUTS = SessionTimeouts(idle=60.0, absolute=600.0)

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "key"),
    ("CLIENT SETNAME", "prodio"),  # a name of two words is two arguments
    (b"CLIENT LIST",),
    ("EVALSHA", "a" * 40, 1, "prodio:s:id", "1800000000", "", 0, -5, 12345678901234567890),
    ("SET", "k", "été ☃ 𝄞"),
    ("SET", "k", b"\x00\xff raw bytes"),
    ("SET", "k", ""),
    ("SET", "k", 0.1 + 0.2),
    ("SET", "k", 1e20),
    ("SET", "k", "x" * 100_000),  # above redis-py's buffer cutoff: it sends chunks
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),  # not taken by hiredis: redis-py packs it
]


def _wire(connection: Connection, command: tuple[Any, ...]) -> bytes:
    return b"".join(bytes(part) for part in connection.pack_command(*command))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: repr(command)[:40])
def test_hiredis_sends_what_redis_py_sends(command: tuple[Any, ...]) -> None:
    ours = with_hiredis_packing(Connection)()
    theirs = Connection()
    assert _wire(ours, command) == _wire(theirs, command)


@pytest.mark.parametrize("value", [True, None, object()])
def test_what_redis_py_refuses_is_still_refused(value: object) -> None:
    with pytest.raises(DataError):
        with_hiredis_packing(Connection)().pack_command("SET", "k", value)


def test_another_encoding_keeps_redis_py_packing() -> None:
    latin = with_hiredis_packing(Connection)(encoding="latin-1")
    assert _wire(latin, ("SET", "k", "é")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"


def test_every_url_scheme_gets_its_own_class_with_hiredis_packing() -> None:
    for url, expected in [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///run/redis.sock?db=0", UnixDomainSocketConnection),
    ]:
        store = RedisSessionStore.from_url(url, TIMEOUTS)
        connection_class = store.client.connection_pool.connection_class
        assert issubclass(connection_class, HiredisPacking), url
        assert issubclass(connection_class, expected), url
    assert with_hiredis_packing(Connection) is with_hiredis_packing(Connection)


@pytest.mark.anyio
async def test_values_round_trip_through_a_real_server(clean_redis: RedisServer) -> None:
    store = RedisSessionStore.from_url(clean_redis.url, TIMEOUTS)
    try:
        text = "été ☃ 𝄞 " + "x" * 100_000
        session = await store.create("alice", {"note": text, "count": 3, "ratio": 0.5})
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"note": text, "count": 3, "ratio": 0.5}
        assert await store.client.execute_command("CLIENT GETNAME") == "prodio"
    finally:
        await store.aclose()
