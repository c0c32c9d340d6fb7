"""The wheel holds every file a pip-installed batchvoid reads: the example configuration, the SQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Files outside Python modules that must be in the wheel; add a path here when one is added.
PACKAGE_DATA = ("batchvoid/examples/providers.example.toml", "batchvoid/ledger/sqlite/schema.sql")
# What pyproject's package-data globs take in; every such file in the source must be in the wheel.
DATA_GLOBS = ("examples/*.toml", "**/*.sql")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel, built offline from a copy of the source (the checkout gets no build/ or egg-info)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "batchvoid", source / "batchvoid", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("batchvoid-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_the_wheel_holds_the_example_configuration(wheel: zipfile.ZipFile) -> None:
    """The example configuration `batchvoid config init` writes is in the wheel, as it is in the source."""
    names = set(wheel.namelist())
    for path in PACKAGE_DATA:
        assert path in names, f"{path} is not in the wheel: add it to [tool.setuptools.package-data]"
        assert wheel.read(path) == (REPO / path).read_bytes()


@pytest.mark.slow
def test_every_data_file_in_the_source_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """Every file the package-data globs name (examples, any *.sql such as the ledger's schema) is in the wheel."""
    names = set(wheel.namelist())
    package = REPO / "batchvoid"
    data = {path.relative_to(REPO).as_posix() for glob in DATA_GLOBS for path in package.glob(glob)}
    assert set(PACKAGE_DATA) <= data
    assert data <= names, f"missing from the wheel: {sorted(data - names)}"
