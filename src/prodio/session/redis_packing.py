"""redis-py's asyncio connections, with commands packed by hiredis instead of in Python.

redis-py 8.1 packs commands with hiredis's C packer only in its synchronous client; its
asyncio connection builds every command in Python, argument by argument. The session
store's scripts take a dozen arguments, and packing was the largest single cost of a
session update on the client (counted with callgrind, in process: a near-cache load plus a
compare-and-set update went from about 640,000 to 555,000 instructions; see
``docs/performance.md``). The wire format is the same: hiredis writes ``str`` as UTF-8 and
numbers as their ``repr``, as redis-py's encoder does; anything else goes to redis-py's own
packer.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection


class HiredisPacking(AbstractConnection):
    """Mix in before a redis-py asyncio connection class; see :func:`with_hiredis_packing`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hiredis only writes UTF-8: any other encoding (an option of redis-py's) keeps
        # redis-py's own packer.
        encoder = self.encoder
        self._pack_with_hiredis = (
            encoder.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
            and encoder.encoding_errors == "strict"
        )

    def pack_command(self, *args: Any) -> list[bytes]:
        if not self._pack_with_hiredis:
            return super().pack_command(*args)
        command = args
        # As redis-py: a command name with spaces ("CLIENT SETNAME") is several arguments.
        if isinstance(command[0], str):
            command = (*command[0].encode().split(), *command[1:])
        elif b" " in command[0]:
            command = (*command[0].split(), *command[1:])
        try:
            return [hiredis.pack_command(command)]
        except TypeError:
            # What hiredis does not take (bool, None, bytearray, other objects): redis-py's
            # packer sends it or raises its DataError, as without this class.
            return super().pack_command(*args)


_PACKING_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def with_hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` (plain, TLS, Unix socket, Sentinel-managed) with hiredis packing."""
    if issubclass(connection_class, HiredisPacking):
        return connection_class
    packing = _PACKING_CLASSES.get(connection_class)
    if packing is None:
        packing = type(
            f"HiredisPacking{connection_class.__name__}", (HiredisPacking, connection_class), {}
        )
        _PACKING_CLASSES[connection_class] = packing
    return packing
