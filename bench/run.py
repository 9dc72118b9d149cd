"""prodio's benchmark suite: ``make bench`` (full run) or ``bench/run.py --quick`` (~1 min).

Starts everything it measures in a temporary folder (its own redis-server on a free port,
prodio with each session store, bare FastAPI and Gradio apps as yardsticks, nginx), drives
them with wrk, prints a table, writes ``bench/results/<timestamp>.json`` and, after a full
run, rewrites the generated part of ``docs/performance.md`` and ``docs/performance.png``.

Needs: 2 cores, ``wrk``, ``redis-server``, ``taskset`` (and ``nginx`` for scenario 5):
``apt-get install -y wrk redis-server nginx``; ``pip install -e '.[bench]'`` for the plot
and the profiler.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import (
    BENCH_DIR,
    BENCH_PASSWORD,
    BENCH_USER,
    LOAD_CORE,
    REPO_ROOT,
    SECRET_KEY,
    SERVER_CORE,
    STORM_PASSWORD,
    BenchError,
    RedisServer,
    RunDirs,
    add_user,
    add_users_in_process,
    available_cores,
    require_binary,
    storm_user_names,
)
from report import console_report, evaluate, markdown_report, plot, update_doc
from scenarios import (
    MODES,
    Context,
    Settings,
    run_memstore,
    run_mode,
    run_nginx,
    run_refusals,
    run_startup,
)

SCENARIOS = ("startup", "requests", "storm", "memstore", "nginx", "refusals")
RESULTS_DIR = BENCH_DIR / "results"
DOC_PATH = REPO_ROOT / "docs" / "performance.md"
PLOT_PATH = REPO_ROOT / "docs" / "performance.png"
# A 1-minute load average above this means something else ran beside the benchmark.
BUSY_LOAD = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--quick", action="store_true", help="one short round: about a minute")
    parser.add_argument("--rounds", type=int, help="measured rounds per row (full: 3)")
    parser.add_argument("--seconds", type=float, help="seconds per measured round (full: 10)")
    parser.add_argument(
        "--modes",
        help="comma-separated: httptools (uvloop + httptools), h11 (asyncio + h11)",
    )
    parser.add_argument("--only", help="comma-separated scenarios to run")
    parser.add_argument("--skip", help="comma-separated scenarios to leave out")
    parser.add_argument(
        "--sessions", type=int, help="sessions for the in-memory store scenario (full: 1e6)"
    )
    parser.add_argument(
        "--refusal-samples",
        type=int,
        help="login refusals measured per kind (full: 300, quick: 60)",
    )
    parser.add_argument(
        "--refusal-seed", type=int, default=1, help="seed of the login refusals' order"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also sample the prodio rows with py-spy"
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--no-docs", action="store_true", help="leave docs/ alone")
    docs.add_argument(
        "--write-docs", action="store_true", help="rewrite docs/ even after a quick run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: print (and with --write-docs, publish) a saved result file",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    chosen = set(SCENARIOS)
    if args.only:
        chosen = {name.strip() for name in args.only.split(",")}
    if args.skip:
        chosen -= {name.strip() for name in args.skip.split(",")}
    if quick and not args.only:
        # Each needs a quiet machine for many seconds: run them with --only.
        chosen -= {"nginx", "startup"}
    if args.refusal_samples is not None and args.refusal_samples < 5:
        raise BenchError("--refusal-samples needs at least 5 per kind for any statistic")
    unknown = chosen - set(SCENARIOS)
    if unknown:
        raise BenchError(f"unknown scenarios: {', '.join(sorted(unknown))}")
    mode_keys = (args.modes or ("httptools" if quick else "httptools,h11")).split(",")
    if any(key not in MODES for key in mode_keys):
        raise BenchError(f"--modes takes: {', '.join(MODES)}")
    return Settings(
        quick=quick,
        modes=[MODES[key] for key in mode_keys],
        rounds=args.rounds or (1 if quick else 3),
        seconds=args.seconds or (2.0 if quick else 10.0),
        warmup=1.0 if quick else 3.0,
        storm_rate=20.0,
        storm_drain=2.0 if quick else 15.0,
        memstore_sessions=args.sessions or (20_000 if quick else 1_000_000),
        memstore_traced_sample=5_000 if quick else 100_000,
        memstore_budget=1.0 if quick else 30.0,
        startup_samples=1 if quick else 3,
        nginx="nginx" in chosen,
        profile=bool(args.profile),
        scenarios=frozenset(chosen),
        refusal_samples=args.refusal_samples or (60 if quick else 300),
        refusal_warmup=5 if quick else 20,
        refusal_seed=args.refusal_seed,
    )


def check_machine(settings: Settings) -> list[str]:
    """Fail early on a missing binary; return notes on what the machine cannot do."""
    notes = []
    require_binary("taskset", "util-linux")
    if settings.scenarios & {"requests", "storm", "nginx"}:
        require_binary("wrk")
        require_binary("redis-server")
    cores = available_cores()
    if not {SERVER_CORE, LOAD_CORE} <= cores:
        raise BenchError(
            f"the benchmark pins servers to core {SERVER_CORE} and load to core "
            f"{LOAD_CORE}; this process may only use cores {sorted(cores)}"
        )
    if len(cores) > 2:
        notes.append(f"{len(cores)} cores: only cores 0 and 1 are used")
    return notes


def redis_store_problem(url: str, data_dir: Path) -> str | None:
    """Why prodio cannot run on its Redis store yet, or None when it can."""
    try:
        from prodio.config import Settings as ProdioSettings
        from prodio.session import build_session_store
        from prodio.session.redis import RedisSessionStore
    except ImportError as exc:
        return f"prodio.session.redis cannot be imported ({exc})"
    try:
        settings = ProdioSettings(
            _env_file=None,
            session_backend="redis",
            redis_url=url,
            secret_key=SECRET_KEY,
            data_dir=data_dir,
        )
        store = build_session_store(settings)
    except Exception as exc:  # any failure only means: not ready to benchmark
        return f"build_session_store does not accept the redis backend ({exc})"
    if not isinstance(store, RedisSessionStore):
        return f"build_session_store made a {type(store).__name__} for the redis backend"
    return None


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def versions() -> dict[str, str]:
    found = {}
    for name in ("gradio", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "redis"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def run(settings: Settings, *, keep: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "settings": {
            **asdict(settings),
            "modes": [mode.key for mode in settings.modes],
            "scenarios": sorted(settings.scenarios),
        },
        "modes": {},
    }
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(tempfile.mkdtemp(prefix="prodio-bench-"))
    dirs = RunDirs(root)
    dirs.data_dir.mkdir(parents=True)
    redis: RedisServer | None = None
    ctx = Context(
        dirs=dirs, settings=settings, redis=None, profile_dir=RESULTS_DIR / f"profiles-{stamp}"
    )
    for note in check_machine(settings):
        ctx.note(note)
    load_at_start = os.getloadavg()[0]
    if load_at_start > BUSY_LOAD:
        ctx.note(
            f"the machine was busy when the run started (load average {load_at_start:.1f}): "
            "other processes share the cores, so req/s and latencies are low and noisy; "
            "CPU µs per request suffers least"
        )
    try:
        add_user(dirs, BENCH_USER, BENCH_PASSWORD)
        if "storm" in settings.scenarios:
            add_users_in_process(dirs, storm_user_names(), STORM_PASSWORD)
        with_redis = False
        if settings.scenarios & {"requests", "storm", "nginx"}:
            redis = RedisServer(root)
            redis.start()
            ctx.redis = redis
            problem = redis_store_problem(redis.url, dirs.data_dir)
            if problem:
                ctx.note(f"Redis store rows skipped: {problem}")
            with_redis = problem is None
        if "startup" in settings.scenarios:
            results["startup"] = run_startup(ctx)
        if settings.scenarios & {"requests", "storm"}:
            for mode in settings.modes:
                results["modes"][mode.key] = run_mode(ctx, mode, with_redis=with_redis)
        if "memstore" in settings.scenarios:
            results["memory_store"] = run_memstore(ctx)
        if settings.nginx:
            if not with_redis:
                ctx.note("nginx scenario skipped: it needs the Redis store")
            else:
                try:
                    require_binary("nginx")
                except BenchError as exc:
                    ctx.note(f"nginx scenario skipped: {exc}")
                else:
                    results["nginx"] = run_nginx(ctx, settings.modes[0])
        if "refusals" in settings.scenarios:
            results["refusals"] = run_refusals(ctx, settings.modes[0])
    finally:
        if redis is not None:
            redis.stop()
        if keep:
            ctx.say(f"kept {root}")
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    results["notes"] = ctx.notes
    results["meta"] = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stamp": stamp,
        "wall_seconds": time.monotonic() - started,
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain")),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "versions": versions(),
    }
    results["targets"] = [verdict.as_dict() for verdict in evaluate(results)]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        print(console_report(results))
        quick = bool(results["settings"]["quick"])
    else:
        try:
            settings = settings_from(args)
            results = run(settings, keep=args.keep)
        except BenchError as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"{results['meta']['stamp']}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(console_report(results))
        seconds = results["meta"]["wall_seconds"]
        print(f"\nresults: {out.relative_to(REPO_ROOT)} ({seconds:.0f} s)")
        quick = settings.quick
    # A run of some scenarios only would replace the whole generated section with them.
    partial = set(results["settings"]["scenarios"]) != set(SCENARIOS)
    if (
        not quick
        and not args.no_docs
        and not args.write_docs
        and args.from_json is None
        and partial
    ):
        print("docs: left alone, since only some scenarios ran (--write-docs publishes them)")
    elif (not quick and not args.no_docs and args.from_json is None) or args.write_docs:
        has_plot = plot(results, PLOT_PATH)
        update_doc(DOC_PATH, markdown_report(results, PLOT_PATH.name if has_plot else None))
        print(f"docs: {DOC_PATH.relative_to(REPO_ROOT)}" + (" and its plot" if has_plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
