"""Where the configuration and the ledger are found: --config, BATCHVOID_CONFIG, ./, the user's, /etc."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import config as configuration
from batchvoid import locations
from batchvoid.cli import main
from batchvoid.errors import ConfigError
from batchvoid.locations import find_config, ledger_path
from tests.conftest import write

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_JOB = str(REPO / "jobs" / "example.csv")
PACKAGED = REPO / "batchvoid" / "examples" / "providers.example.toml"


def profile_named(name: str) -> str:
    """A valid configuration whose one profile's name says which file it is."""
    return f'[providers.{name}]\ntype = "rapyd"\n'


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A configuration file in every place batchvoid looks, each with a profile named after its place."""
    work, xdg, system = tmp_path / "work", tmp_path / "xdg", tmp_path / "etc" / "batchvoid"
    for directory in (work, xdg / "batchvoid", system):
        directory.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setattr(locations, "SYSTEM_DIR", system)
    found = {
        "flag": write(tmp_path / "flag.toml", profile_named("flag")),
        "env": write(tmp_path / "env.toml", profile_named("env")),
        "cwd": write(work / "batchvoid.toml", profile_named("cwd")),
        "user": write(xdg / "batchvoid" / "batchvoid.toml", profile_named("user")),
        "system": write(system / "batchvoid.toml", profile_named("system")),
    }
    monkeypatch.setenv("BATCHVOID_CONFIG", str(found["env"]))
    return found


def chosen(explicit: Path | None = None) -> str:
    found = find_config(explicit, os.environ)
    assert found.path is not None
    return next(iter(configuration.load(found.path).profiles))


def test_discovery_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, else BATCHVOID_CONFIG, else ./batchvoid.toml, else the user's directory, else /etc: each wins over those after it."""
    assert chosen(places["flag"]) == "flag"
    assert chosen() == "env"
    monkeypatch.delenv("BATCHVOID_CONFIG")
    assert chosen() == "cwd"
    places["cwd"].unlink()
    assert chosen() == "user"
    places["user"].unlink()
    assert chosen() == "system"
    places["system"].unlink()
    found = find_config(None, {})
    assert found.path is None
    assert found.looked == (Path("batchvoid.toml"), places["user"], places["system"])


def test_the_user_directory_is_under_home_without_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With XDG_CONFIG_HOME unset, the user's configuration is ~/.config/batchvoid/batchvoid.toml (Linux)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the XDG layout is Linux's")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    path = write_dirs(tmp_path / ".config" / "batchvoid" / "batchvoid.toml", profile_named("home"))
    assert find_config(None, {}).path == path


def write_dirs(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(path, text)


@pytest.mark.parametrize("value", ["missing.toml", "."])
def test_batchvoid_config_naming_no_file_is_an_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """BATCHVOID_CONFIG naming a file that is not there is refused, not passed over for another file."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "batchvoid.toml", profile_named("cwd"))
    with pytest.raises(
        ConfigError, match=r"^BATCHVOID_CONFIG names .*, which (does not exist|is a directory)"
    ):
        find_config(None, {"BATCHVOID_CONFIG": value})


# -- the ledger -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "env", "simulate", "expected"),
    [
        (None, {}, False, "batchvoid.sqlite"),
        (None, {}, True, "rehearsal.sqlite"),
        (None, {"BATCHVOID_LEDGER": "/var/lib/bv/ledger.sqlite"}, False, "/var/lib/bv/ledger.sqlite"),
        (
            None,
            {"BATCHVOID_LEDGER": "/var/lib/bv/ledger.sqlite"},
            True,
            "/var/lib/bv/ledger.rehearsal.sqlite",
        ),
        (Path("mine.sqlite"), {"BATCHVOID_LEDGER": "/var/lib/bv/ledger.sqlite"}, False, "mine.sqlite"),
        (Path("mine.sqlite"), {"BATCHVOID_LEDGER": "/var/lib/bv/ledger.sqlite"}, True, "mine.sqlite"),
        (None, {"BATCHVOID_LEDGER": ""}, False, "batchvoid.sqlite"),
    ],
)
def test_ledger_location(explicit: Path | None, env: dict[str, str], simulate: bool, expected: str) -> None:
    """--ledger, else BATCHVOID_LEDGER (a rehearsal's next to it, never the same file), else the default."""
    assert ledger_path(explicit, env, simulate=simulate) == Path(expected)


@pytest.mark.parametrize(
    ("explicit", "env", "simulate", "expected"),
    [
        (
            None,
            {"BATCHVOID_LEDGER": "postgresql://bv@db:5432/billing"},
            False,
            "postgresql://bv@db:5432/billing",
        ),
        (None, {"BATCHVOID_LEDGER": "postgresql://bv@db:5432/billing"}, True, Path("rehearsal.sqlite")),
        ("postgres://bv@db/billing", {}, True, "postgres://bv@db/billing"),
    ],
)
def test_a_database_url_is_a_ledger_location_and_a_rehearsal_never_shares_it(
    explicit: str | None, env: dict[str, str], simulate: bool, expected: object
) -> None:
    """A URL stays a URL (a Path would fold its //); a rehearsal with BATCHVOID_LEDGER set to one gets its own file."""
    assert ledger_path(explicit, env, simulate=simulate) == expected


def test_a_url_is_shown_without_its_password() -> None:
    from batchvoid.ledger import shown

    assert shown("postgresql://bv:s3cret@db:5432/billing") == "postgresql://bv:***@db:5432/billing"
    assert shown("postgresql://bv@db/billing") == "postgresql://bv@db/billing"
    assert shown("postgresql://db/billing?sslmode=require&password=s3cret") == (
        "postgresql://db/billing?sslmode=require&password=***"
    )
    assert shown("postgresql://bv:a@db/billing?PASSWORD=b") == "postgresql://bv:***@db/billing?PASSWORD=***"
    assert shown("postgresql:///billing?host=/run/pg") == "postgresql:///billing?host=/run/pg"  # as given
    assert shown(Path("l.sqlite")) == "l.sqlite"


# -- through the command line ----------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_config_check_says_which_file_it_read(
    places: dict[str, Path], runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config check` names the file it read and why that one, for each place."""
    assert (
        f"Configuration: {places['flag']} (--config)"
        in runner.invoke(main, ["config", "check", "--config", str(places["flag"])]).stdout
    )
    assert (
        f"Configuration: {places['env']} (BATCHVOID_CONFIG)"
        in runner.invoke(main, ["config", "check"]).stdout
    )
    monkeypatch.delenv("BATCHVOID_CONFIG")
    places["cwd"].unlink()
    result = runner.invoke(main, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert f"Configuration: {places['user']} (the user configuration directory)" in result.stdout
    assert "Valid: 1 provider profile." in result.stdout
    assert "user  rapyd at https://sandboxapi.rapyd.net; access_key_env RAPYD_ACCESS_KEY" in result.stdout


def test_config_check_without_any_file_says_where_it_looked(
    places: dict[str, Path], runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file anywhere: exit 2, one error line listing every place looked and how to write one."""
    monkeypatch.delenv("BATCHVOID_CONFIG")
    for name in ("cwd", "user", "system"):
        places[name].unlink()
    result = runner.invoke(main, ["config", "check"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: no configuration file found")
    for where in ("./batchvoid.toml", str(places["user"]), str(places["system"]), "batchvoid config init"):
        assert where in result.stderr


def test_config_check_refuses_a_bad_file_with_one_error_line(tmp_path: Path, runner: CliRunner) -> None:
    """A misspelt key: exit 2, the file, the table, the key and the guess, no traceback."""
    bad = write(tmp_path / "c.toml", '[providers.rapyd]\ntype = "rapyd"\nacess_key_env = "X"\n')
    result = runner.invoke(main, ["config", "check", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}: [providers.rapyd]: unknown key 'acess_key_env'")
    assert result.stderr.rstrip().endswith("did you mean 'access_key_env'?")


def test_run_and_plan_read_the_file_found_and_say_which(
    places: dict[str, Path], runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no --config, plan and run read the system configuration when it is the only one, and say so (plan's line, run's log)."""
    monkeypatch.delenv("BATCHVOID_CONFIG")
    places["cwd"].unlink()
    places["user"].unlink()
    write(places["system"], '[providers.rapyd]\ntype = "rapyd"\nrate_limits = []\n')
    job = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,inv_1\n")
    plan = runner.invoke(main, ["plan", str(job), "--simulate"])
    assert plan.exit_code == 0, plan.output
    assert f"Configuration: {places['system']}\n" in plan.stdout
    result = runner.invoke(main, ["run", str(job), "--simulate"])
    assert result.exit_code == 0, result.output
    started = json.loads((Path("j.csv.log")).read_text().splitlines()[0])
    assert started["event"] == "run.started"
    assert started["config"] == str(places["system"])


def test_a_real_run_with_no_configuration_anywhere_is_refused(
    places: dict[str, Path], runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --config and no file where batchvoid looks: exit 2 saying where it looked; a rehearsal uses the built-in one."""
    monkeypatch.delenv("BATCHVOID_CONFIG")
    for name in ("cwd", "user", "system"):
        places[name].unlink()
    result = runner.invoke(main, ["run", EXAMPLE_JOB])
    assert result.exit_code == 2
    assert "error: no configuration: pass --config FILE, set BATCHVOID_CONFIG" in result.stderr
    assert str(places["system"]) in result.stderr
    rehearsal = runner.invoke(main, ["plan", EXAMPLE_JOB, "--simulate"])
    assert rehearsal.exit_code == 0, rehearsal.output
    assert "Configuration: built-in simulator configuration" in rehearsal.stdout


def test_batchvoid_ledger_is_where_run_status_and_a_rehearsal_write(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BATCHVOID_LEDGER: run writes that ledger and status reads it; --simulate writes NAME.rehearsal.sqlite beside it; --ledger wins."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    ledger = tmp_path / "state" / "month.sqlite"
    monkeypatch.setenv("BATCHVOID_LEDGER", str(ledger))
    job = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,inv_1\n")
    write(tmp_path / "batchvoid.toml", '[providers.rapyd]\ntype = "rapyd"\nrate_limits = []\n')
    rehearsal = runner.invoke(main, ["run", str(job), "--simulate"])
    assert rehearsal.exit_code == 0, rehearsal.output
    assert (tmp_path / "state" / "month.rehearsal.sqlite").is_file()
    assert not ledger.exists()
    assert not (tmp_path / "rehearsal.sqlite").exists()
    status = runner.invoke(main, ["status", "--ledger", str(tmp_path / "state" / "month.rehearsal.sqlite")])
    assert "j.csv" in status.stdout
    runner.invoke(main, ["run", str(job), "--simulate", "--ledger", "own.sqlite"])
    assert (tmp_path / "own.sqlite").is_file()
    missing = runner.invoke(main, ["status"])
    assert missing.exit_code == 2
    assert f"error: {ledger}: no such ledger" in missing.stderr


# -- config init ----------------------------------------------------------------------------------


def test_config_init_writes_the_example_and_never_overwrites_without_force(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config init` writes the packaged example (valid as it is); a second init is exit 2 and leaves the file; --force replaces it."""
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(main, ["config", "init"])
    assert first.exit_code == 0, first.output
    written = tmp_path / "batchvoid.toml"
    assert written.read_text() == PACKAGED.read_text()
    assert "batchvoid config check" in first.stdout
    assert runner.invoke(main, ["config", "check"]).exit_code == 0
    written.write_text("# mine\n")
    again = runner.invoke(main, ["config", "init"])
    assert again.exit_code == 2
    assert again.stderr.startswith("error: batchvoid.toml exists already")
    assert "--force" in again.stderr
    assert written.read_text() == "# mine\n"
    forced = runner.invoke(main, ["config", "init", "--force"])
    assert forced.exit_code == 0
    assert written.read_text() == PACKAGED.read_text()


def test_config_init_to_a_path_in_a_missing_directory_says_what_to_do(
    tmp_path: Path, runner: CliRunner
) -> None:
    """A PATH whose directory does not exist: exit 2 with the mkdir to run, and nothing written."""
    target = tmp_path / "nope" / "batchvoid.toml"
    result = runner.invoke(main, ["config", "init", str(target)])
    assert result.exit_code == 2
    assert f"mkdir -p {target.parent}" in result.stderr
    assert not target.parent.exists()


def test_config_init_into_the_user_directory_is_then_found(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `config init ~/.config/batchvoid/batchvoid.toml` then `config check` finds it there."""
    monkeypatch.chdir(tmp_path)
    target = locations.user_dir() / "batchvoid.toml"
    target.parent.mkdir(parents=True)
    assert runner.invoke(main, ["config", "init", str(target)]).exit_code == 0
    check = runner.invoke(main, ["config", "check"])
    assert check.exit_code == 0, check.output
    assert f"Configuration: {target} (the user configuration directory)" in check.stdout


def test_the_readme_copy_of_the_example_is_the_packaged_one() -> None:
    """config/providers.example.toml (the README's path) is the file the package installs, byte for byte."""
    assert (REPO / "config" / "providers.example.toml").read_bytes() == PACKAGED.read_bytes()
    assert configuration.example() == PACKAGED.read_text(encoding="utf-8")


# -- the README's examples -------------------------------------------------------------------------


def readme_section(title: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_configuration_examples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TOML block of the README's Configuration section is a valid configuration, its file and command keys read as such."""
    monkeypatch.setattr(configuration, "tls_context", lambda path, where: None)  # its CA files are examples
    blocks = readme_section("Configuration").split("```toml\n")[1:]
    assert len(blocks) >= 2
    loaded = [
        configuration.load(write(tmp_path / f"{n}.toml", block.split("```", 1)[0]))
        for n, block in enumerate(blocks)
    ]
    sources = {c.key for cfg in loaded for p in cfg.profiles.values() for c in p.credentials.values()}
    assert {"api_token_file", "access_key_command", "secret_key_command", "secret_key_file"} <= sources


def test_the_readme_error_examples_are_what_batchvoid_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's misspelt-key and missing-secret-file errors are the real messages, word for word."""
    section = readme_section("Configuration")
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "batchvoid.toml", '[providers.rapyd]\ntype = "rapyd"\nacess_key_env = "X"\n')
    with pytest.raises(ConfigError) as misspelt:
        configuration.load(Path("batchvoid.toml"))
    assert f"error: {misspelt.value}\n" in section
    blocks = [block.split("```", 1)[0] for block in section.split("```toml\n")[1:]]
    credentials = next(block for block in blocks if block.startswith("[providers.maple]"))
    write(tmp_path / "batchvoid.toml", credentials)
    maple = configuration.load(Path("batchvoid.toml")).profiles["maple"]
    if Path("/run/secrets/maple_api_token").exists():
        pytest.skip("this machine has the README's secret file")
    with pytest.raises(ConfigError) as missing:
        maple.secrets({})
    assert f"error: {missing.value}\n" in section
    (tmp_path / "bin").mkdir()
    op = write(
        tmp_path / "bin" / "op", f"#!{sys.executable}\nimport sys\nsys.exit(1)\n"
    )  # 1Password CLI, signed out
    op.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigError) as failed:
        configuration.load(Path("batchvoid.toml")).profiles["rapyd"].secrets({})
    assert f"error: {failed.value}\n" in section
