"""The dependencies are locked, and the tests run exactly the locked versions.

``make audit`` checks ``requirements.lock`` for known advisories; that only means something
if the lock names every dependency and the code under test runs those very versions.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)")


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.fullmatch(line)
        assert match, f"requirements.lock: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]] + [
        Requirement(text) for text in project["optional-dependencies"]["dev"]
    ]


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside "
            f"{requirement.specifier} of pyproject.toml (make lock)"
        )


def test_gradio_is_pinned_exactly() -> None:
    # Gradio's routes are what the security tests pin down; another version needs them rerun.
    gradio = next(r for r in declared() if canonicalize_name(r.name) == "gradio")
    assert str(gradio.specifier).startswith("==")
    assert locked()["gradio"] == str(gradio.specifier).removeprefix("==")


def test_the_tests_run_the_locked_versions() -> None:
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    mismatched = {
        name: (version, installed[name])
        for name, version in locked().items()
        if name in installed and installed[name] != version
    }
    missing = sorted(set(locked()) - set(installed))
    assert not mismatched, f"installed versions differ from requirements.lock: {mismatched}"
    assert not missing, f"locked but not installed: {missing}"
