"""A login storm: ``RATE`` logins a second through the login form, open loop, for a while.

Each login is a new browser (its own connection and cookie jar): ``GET /login`` for the
CSRF cookie and token, then ``POST /login``, which must answer 303 with a session cookie.
Logins go round-robin over ``--users`` accounts and each says it comes from its own
address (``X-Forwarded-For`` with a documentation address, 203.0.113.0/24, which the server
trusts from 127.0.0.1 as it would from its proxy): many people signing in at once, not one
client hammering one account, which prodio's login throttle would rightly refuse.
Logins start on schedule whether or not the earlier ones have finished, so a slow server
sees them pile up as it would in real life (bounded by ``--max-in-flight``).

Prints ``READY`` when the first login starts, then, at the end, one JSON object on standard
output: attempts, successes, failures and the login latencies. Failures count every login
that did not end with a session; among them ``shed`` are the 503s with ``Retry-After`` of a
server that refused to queue more password checks (load shedding: the answer should be
quick), and ``throttled`` the 429s of the login throttle.

    python bench/login_storm.py --url http://127.0.0.1:8001 --users storm00,storm01 \\
        --password-env STORM_PASSWORD --rate 20 --seconds 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import time
from dataclasses import dataclass, field

import httpx

CSRF_FIELD = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
PAGE_LOAD = {"sec-fetch-mode": "navigate", "accept": "text/html"}
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}
# One TLS context for every client: httpx makes a new one per client otherwise, loading the
# CA bundle (~25 ms of CPU), which at 20 logins/s took half of the load core from wrk.
TLS_CONTEXT = ssl.create_default_context()


OK, SHED, THROTTLED, FAILED = "ok", "shed", "throttled", "failed"


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class StormStats:
    attempts: int = 0
    successes: int = 0
    failures: int = 0
    shed: int = 0
    throttled: int = 0
    skipped: int = 0
    unfinished: int = 0
    in_time: int = 0
    latencies: list[float] = field(default_factory=list)
    shed_latencies: list[float] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)

    def as_dict(self, seconds: float) -> dict[str, float]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "shed": self.shed,
            "throttled": self.throttled,
            "skipped": self.skipped,
            "unfinished": self.unfinished,
            # Logins finished within the schedule, per second: what the server kept up with.
            "logins_per_second": self.in_time / seconds if seconds else 0.0,
            "login_p50_ms": self.percentile(0.50) * 1000,
            "login_p99_ms": self.percentile(0.99) * 1000,
            "shed_per_second": self.shed / seconds if seconds else 0.0,
            # How long a refused login waited for its 503: shedding is only kind when quick.
            "shed_p99_ms": percentile(self.shed_latencies, 0.99) * 1000,
            "retry_after_median_s": percentile(self.retry_after, 0.5),
        }


def client_address(number: int) -> str:
    """A distinct address from TEST-NET-3 (RFC 5737) per login: a header value only."""
    return f"203.0.113.{1 + number % 254}"


def retry_after_seconds(answer: httpx.Response) -> float | None:
    value = answer.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


async def log_in_once(
    base_url: str, username: str, password: str, number: int
) -> tuple[str, float | None]:
    """One login as a new browser: the outcome, and ``Retry-After`` if the server sent one."""
    headers = {"x-forwarded-for": client_address(number)}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60.0, verify=TLS_CONTEXT
    ) as client:
        page = await client.get("/login", headers=PAGE_LOAD)
        match = CSRF_FIELD.search(page.text)
        if page.status_code != 200 or match is None:
            return FAILED, None
        answer = await client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": match.group(1)},
            headers={**PAGE_LOAD, **SAME_ORIGIN},
        )
        if answer.status_code == 303 and "prodio_session" in answer.cookies:
            return OK, None
        if answer.status_code == 503:
            return SHED, retry_after_seconds(answer)
        if answer.status_code == 429:
            return THROTTLED, retry_after_seconds(answer)
        return FAILED, None


async def storm(
    base_url: str,
    usernames: list[str],
    password: str,
    *,
    rate: float,
    seconds: float,
    max_in_flight: int,
    drain_seconds: float,
) -> StormStats:
    stats = StormStats()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(number: int) -> None:
        started = time.perf_counter()
        retry_after = None
        try:
            username = usernames[number % len(usernames)]
            outcome, retry_after = await log_in_once(base_url, username, password, number)
        except httpx.HTTPError:
            outcome = FAILED
        finished = time.perf_counter()
        if outcome == OK:
            stats.successes += 1
            stats.latencies.append(finished - started)
            if finished - start <= seconds:
                stats.in_time += 1
            return
        stats.failures += 1
        if retry_after is not None:
            stats.retry_after.append(retry_after)
        if outcome == SHED:
            stats.shed += 1
            stats.shed_latencies.append(finished - started)
        elif outcome == THROTTLED:
            stats.throttled += 1

    # The caller waits for this line, so that its measurement starts once logins flow.
    print("READY", flush=True)
    start = time.perf_counter()
    count = int(rate * seconds)
    for number in range(count):
        # Open loop: the n-th login starts at n / rate seconds, however the others fare.
        delay = start + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stats.attempts += 1
        if len(in_flight) >= max_in_flight:
            stats.skipped += 1
            continue
        task = asyncio.create_task(one(number))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        # The logins still queued when the schedule ends count, but only for a while.
        _, pending = await asyncio.wait(in_flight, timeout=drain_seconds)
        stats.unfinished = len(pending)
        for task in pending:
            task.cancel()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", required=True, help="comma-separated user names")
    parser.add_argument(
        "--password-env", required=True, help="the variable that holds the password"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="logins started per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument(
        "--drain-seconds", type=float, default=15.0, help="how long to wait for late logins"
    )
    args = parser.parse_args()
    password = os.environ[args.password_env]
    stats = asyncio.run(
        storm(
            args.url,
            args.users.split(","),
            password,
            rate=args.rate,
            seconds=args.seconds,
            max_in_flight=args.max_in_flight,
            drain_seconds=args.drain_seconds,
        )
    )
    print(json.dumps(stats.as_dict(args.seconds)))


if __name__ == "__main__":
    main()
