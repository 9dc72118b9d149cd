"""Login refusals, timed: wrong password, unknown user and disabled account, interleaved.

One browser (one keep-alive connection and cookie jar) loads ``GET /login`` once for its
CSRF cookie and token, then sends ``POST /login`` after ``POST /login``, one at a time,
each with the CSRF token of the page the previous answer rendered, ``Origin`` and
``Sec-Fetch-Site`` as a browser sends them. The kinds of refusal come in a random order
(seeded, so a run can be repeated), after a warm-up of each; every password sent is a
fresh random one of the same length, so the three kinds differ only in the name.

Prints ``READY`` once the warm-up is done, then one JSON object on standard output: the
order, every sample (milliseconds from sending the request to having read the whole
answer, by ``time.perf_counter_ns``), the status codes seen, and for each kind the raw
status, headers and body of its first measured answer, for comparison.

    python bench/login_refusals.py --url http://127.0.0.1:8001 \\
        --kind wrong_password=timing-alice --kind unknown_user=timing-ghost \\
        --kind disabled_account=timing-carol --samples 300 --warmup 20 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import re
import secrets
import sys
import time
from typing import Any

import httpx

CSRF_FIELD = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
# What a browser sends with a form post from a page of the same site.
FORM_POST = {
    "accept": "text/html",
    "sec-fetch-mode": "navigate",
    "sec-fetch-dest": "document",
    "sec-fetch-site": "same-origin",
}


def wrong_password() -> str:
    """A random password of fixed length: never anyone's, never on the common list."""
    return "not-it-" + secrets.token_hex(8)


def raw_answer(answer: httpx.Response) -> dict[str, Any]:
    return {
        "status": answer.status_code,
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in answer.headers.raw
        ],
        "body": answer.text,
    }


def run(
    base_url: str, kinds: dict[str, str], *, samples: int, warmup: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        page = client.get("/login", headers={"accept": "text/html", "sec-fetch-mode": "navigate"})
        match = CSRF_FIELD.search(page.text)
        if page.status_code != 200 or match is None:
            raise SystemExit(f"GET /login answered {page.status_code} without a CSRF token")
        token = match.group(1)
        headers = {**FORM_POST, "origin": base_url, "referer": base_url + "/login"}

        def post(username: str) -> tuple[float, httpx.Response]:
            nonlocal token
            form = {"username": username, "password": wrong_password(), "csrf_token": token}
            started = time.perf_counter_ns()
            answer = client.post("/login", data=form, headers=headers)
            answer.read()
            elapsed_ms = (time.perf_counter_ns() - started) / 1e6
            found = CSRF_FIELD.search(answer.text)
            if found is not None:
                token = found.group(1)  # as a browser posts the form the answer shows
            return elapsed_ms, answer

        warm = [kind for kind in kinds for _ in range(warmup)]
        rng.shuffle(warm)
        for kind in warm:
            post(kinds[kind])
        print("READY", flush=True)

        order = [kind for kind in kinds for _ in range(samples)]
        rng.shuffle(order)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        statuses: dict[str, dict[str, int]] = {kind: {} for kind in kinds}
        first: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        for kind in order:
            elapsed_ms, answer = post(kinds[kind])
            times[kind].append(elapsed_ms)
            code = str(answer.status_code)
            statuses[kind][code] = statuses[kind].get(code, 0) + 1
            if kind not in first:
                first[kind] = raw_answer(answer)
        return {
            "seed": seed,
            "samples": samples,
            "warmup": warmup,
            "seconds": time.monotonic() - started,
            "usernames": kinds,
            "order": order,
            "times_ms": times,
            "statuses": statuses,
            "answers": first,
        }


def parse_kind(text: str) -> tuple[str, str]:
    kind, separator, username = text.partition("=")
    if not separator or not kind or not username:
        raise argparse.ArgumentTypeError(f"expected KIND=USERNAME, not {text!r}")
    return kind, username


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--kind", type=parse_kind, action="append", required=True, help="KIND=USERNAME"
    )
    parser.add_argument("--samples", type=int, default=300, help="measured requests per kind")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per kind")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(
        args.url, dict(args.kind), samples=args.samples, warmup=args.warmup, seed=args.seed
    )
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
