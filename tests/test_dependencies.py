"""Dependencies are bounded on both sides, and CI runs the suite at both ends of each range."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SPEC = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][0-9.]*),<([0-9][0-9.]*)$")


def _release(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


RUNTIME_EXTRAS = ("postgresql",)  # optional features' dependencies: bounded and tested like the rest
SPEC_EXTRAS = re.compile(r"\[[a-z,]+\]")


def bounds() -> dict[str, tuple[str, str]]:
    """name -> (lower, upper) of every runtime dependency, optional extras' too; each `name>=X,<Y`."""
    found = {}
    extras = [r for extra in RUNTIME_EXTRAS for r in PROJECT["optional-dependencies"][extra]]
    for requirement in [*PROJECT["dependencies"], *extras]:
        requirement = requirement.partition(";")[0]  # an environment marker says where, not which
        match = SPEC.match(SPEC_EXTRAS.sub("", requirement.replace(" ", "")))
        assert match, f"{requirement!r}: write NAME>=OLDEST_TESTED,<NEXT_MAJOR"
        found[match[1].lower()] = (match[2], match[3])
    return found


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    """NAME>=X,<Y for each, the upper bound a major release above the lower one's (or the next 0.x)."""
    for name, (lower, upper) in bounds().items():
        low, high = _release(lower), _release(upper)
        assert high > low, name
        assert len(high) == 1 or high[0] == 0, f"{name}: the upper bound is a major release, <{high[0]}"


def test_the_lowest_constraints_pin_exactly_the_lower_bounds() -> None:
    """.ci/lowest-constraints.txt pins each dependency at its lower bound, and nothing else."""
    pins = {}
    for line in (REPO / ".ci" / "lowest-constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = _release(pinned.strip())
    # psycopg[binary] is psycopg with its C build, psycopg-binary, which moves in lockstep.
    expected = {name: _release(lower) for name, (lower, _) in bounds().items()}
    expected["psycopg-binary"] = expected["psycopg"]
    assert pins == expected


def test_ci_runs_the_suite_from_pyproject_and_at_the_lower_bounds() -> None:
    """.ci/run installs from pyproject (the newest releases the bounds allow), then with the lowest constraints."""
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && python -m pytest" in script
    assert "pip install -c .ci/lowest-constraints.txt -e '.[test]' && python -m pytest" in script


def test_the_test_extra_installs_every_optional_feature() -> None:
    """`pip install -e '.[test]'` (the README's and CI's) brings the PostgreSQL driver: its tests cannot drop out."""
    assert any(
        r.startswith(f"batchvoid[{extra}]")
        for extra in RUNTIME_EXTRAS
        for r in PROJECT["optional-dependencies"]["test"]
    )


def test_the_installed_releases_are_within_the_bounds() -> None:
    """This environment, whichever end CI installed, is inside every range."""
    for name, (lower, upper) in bounds().items():
        installed = _release(re.match(r"[0-9.]*[0-9]", version(name))[0])  # type: ignore[index]
        assert _release(lower) <= installed < _release(upper), (name, version(name))


def test_commands_run_on_uvloop_where_it_is_installed() -> None:
    """The engine's loop is uvloop's (a POSIX dependency): the bench's overhead run measured ~15% less CPU."""
    import asyncio

    from batchvoid import cli

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert cli.UVLOOP
    assert cli._run_async(loop_module).startswith("uvloop")
