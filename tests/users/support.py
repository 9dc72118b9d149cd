"""Helpers shared by the user tests and the CLI tests."""

from __future__ import annotations

import socket

from prodio.users import PasswordHasher

# Cheap enough for many tests; the default parameters are tested on their own.
CHEAP_ARGON2 = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


def cheap_hasher(**overrides: int) -> PasswordHasher:
    """A hasher with the cheapest parameters argon2 accepts (``overrides`` change some)."""
    return PasswordHasher(**{**CHEAP_ARGON2, **overrides})


def free_port() -> int:
    """A loopback port nothing listens on (for "cannot connect" cases)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
