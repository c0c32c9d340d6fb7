"""Shell completion through click's mechanism: `_BATCHVOID_COMPLETE=bash_source batchvoid`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The console script pip installed next to this interpreter: completion keys on its name.
BATCHVOID = shutil.which("batchvoid", path=str(Path(sys.executable).parent)) or "batchvoid"


def complete(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BATCHVOID], env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _batchvoid_completion batchvoid"),
        ("zsh", "compdef _batchvoid_completion batchvoid"),
        ("fish", "complete --no-files --command batchvoid"),
    ],
)
def test_each_shell_gets_a_completion_script(shell: str, marker: str) -> None:
    """`_BATCHVOID_COMPLETE={shell}_source batchvoid` prints that shell's script and exits 0."""
    result = complete(_BATCHVOID_COMPLETE=f"{shell}_source")
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert result.stderr == ""


def test_commands_and_options_complete() -> None:
    """A command name and a command's option complete from the real click tree."""
    commands = complete(_BATCHVOID_COMPLETE="bash_complete", COMP_WORDS="batchvoid re", COMP_CWORD="1")
    assert commands.stdout.split() == ["plain,report"]
    options = complete(_BATCHVOID_COMPLETE="bash_complete", COMP_WORDS="batchvoid run --max", COMP_CWORD="2")
    assert options.stdout.split() == [
        "plain,--max-workers",
        "plain,--max-failures",
        "plain,--max-failure-rate",
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_script_completes_in_bash() -> None:
    """Sourced into bash, the script's completion function fills COMPREPLY for `batchvoid sta`."""
    script = (
        'eval "$(_BATCHVOID_COMPLETE=bash_source batchvoid)"\n'
        "COMP_WORDS=(batchvoid sta); COMP_CWORD=1\n"
        "_batchvoid_completion batchvoid\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(BATCHVOID).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        ["bash", "--norc", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["status"]
