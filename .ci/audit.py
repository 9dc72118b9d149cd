"""Known advisories in the locked dependencies: ``make audit`` (and ``.ci/run``).

Runs pip-audit over ``requirements.lock`` (exact pins, no resolution) and fails on any
known vulnerability. pip-audit needs an advisory database: PyPI's JSON API or OSV. When
neither can be reached (a build machine behind a mirror that serves only the package
index), nothing could be checked: that is said in a banner, loudly, and the build goes on,
because failing every build for a missing network would only teach people to skip this.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
SERVICES = ("pypi", "osv")


def audit(service: str) -> tuple[str, list[dict[str, object]]]:
    """("ok" | "unreachable", dependencies as pip-audit reports them)."""
    completed = subprocess.run(  # noqa: S603 - our own venv's pip-audit, fixed arguments
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--vulnerability-service",
            service,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        # pip-audit ends with a traceback when the service cannot be reached at all.
        last = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"audit: {service}: {last[0][:300]}", file=sys.stderr)
        return "unreachable", []
    dependencies: list[dict[str, object]] = report.get("dependencies", [])
    if dependencies and all("skip_reason" in dep for dep in dependencies):
        print(f"audit: {service}: no dependency could be looked up", file=sys.stderr)
        return "unreachable", dependencies
    return "ok", dependencies


def main() -> int:
    if not LOCK.exists():
        print(f"audit: {LOCK} is missing (make lock)", file=sys.stderr)
        return 2
    for service in SERVICES:
        state, dependencies = audit(service)
        if state == "unreachable":
            continue
        vulnerable = [dep for dep in dependencies if dep.get("vulns")]
        skipped = [dep["name"] for dep in dependencies if "skip_reason" in dep]
        for dep in vulnerable:
            ids = ", ".join(str(vuln.get("id")) for vuln in dep["vulns"])  # type: ignore[attr-defined]
            print(f"audit: {dep['name']} {dep.get('version')}: {ids}", file=sys.stderr)
        if skipped:
            print(f"audit: not found in {service}: {', '.join(map(str, skipped))}")
        print(
            f"audit: {len(dependencies)} locked dependencies checked against {service}: "
            f"{len(vulnerable)} with known advisories"
        )
        return 1 if vulnerable else 0
    print(
        "\n" + "=" * 78 + "\n"
        "DEPENDENCY AUDIT NOT RUN: no advisory database could be reached from this machine\n"
        f"(tried: {', '.join(SERVICES)}). requirements.lock was NOT checked for known\n"
        "vulnerabilities. Run `make audit` where pypi.org or api.osv.dev is reachable.\n"
        + "="
        * 78,
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
