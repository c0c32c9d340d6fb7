"""Credentials from files (mounted secrets) and commands (password managers), checked as variables are."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.cli import main
from batchvoid.credentials import Sources
from batchvoid.errors import ConfigError
from batchvoid.ledger import NewJob, open_ledger
from batchvoid.preflight import targets
from batchvoid.simulator import CREDENTIALS, SimulatorSettings
from tests.conftest import write
from tests.served import served

TOKEN = CREDENTIALS["maple"]["api_token"]


def maple(
    tmp_path: Path, source: str, *, url: str = "https://api.maplebilling.com", name: str = "c.toml"
) -> Path:
    """A configuration with one Maple profile whose api_token comes from `source` (a key = value line)."""
    return write(
        tmp_path / name,
        f'[providers.maple]\ntype = "maple"\nbase_url = "{url}"\ncompany_id = "cmp_simulated"\n'
        f"rate_limits = []\nmax_attempts = 1\n{source}\n",
    )


def script(tmp_path: Path, body: str, name: str = "secret.py") -> str:
    """A command line that runs `body` as a Python script with this interpreter."""
    path = write(tmp_path / name, "import sys, time\n" + body)
    return shlex.join([sys.executable, str(path)])


def secrets(
    tmp_path: Path, source: str, sources: Sources | None = None, notices: list[str] | None = None
) -> dict[str, str]:
    profile = configuration.load(maple(tmp_path, source)).profiles["maple"]
    return profile.secrets(sources or Sources({}), notices)


def toml(text: str) -> str:
    """`text` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- *_file ---------------------------------------------------------------------------------


def test_a_file_gives_the_value_with_its_trailing_newline_trimmed_quietly(tmp_path: Path) -> None:
    """api_token_file: the file's content, one trailing newline removed without a warning."""
    secret = write(tmp_path / "token", TOKEN + "\n")
    notices: list[str] = []
    assert secrets(tmp_path, f"api_token_file = {toml(str(secret))}", notices=notices) == {"api_token": TOKEN}
    assert notices == []


def test_more_whitespace_in_a_file_is_trimmed_with_a_notice_naming_the_file(tmp_path: Path) -> None:
    """A CRLF line end in a secret file is trimmed, with a notice naming the file and never the value."""
    secret = write(tmp_path / "token", TOKEN + "\r\n")
    notices: list[str] = []
    assert secrets(tmp_path, f"api_token_file = {toml(str(secret))}", notices=notices) == {"api_token": TOKEN}
    assert notices == [
        f"file {secret} has whitespace around its value (a CRLF line end, or a second newline?): using it trimmed"
    ]


def test_a_relative_file_is_found_next_to_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative *_file path is taken from the configuration file's directory, not the working directory."""
    (tmp_path / "secrets").mkdir()
    write(tmp_path / "secrets" / "maple", TOKEN)
    monkeypatch.chdir(tmp_path / "secrets")
    assert secrets(tmp_path, 'api_token_file = "secrets/maple"') == {"api_token": TOKEN}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "which does not exist: mount the secret there"),
        (lambda p: p.write_text(""), "which is empty: put the secret in it"),
        (lambda p: p.write_text("\n"), "which is empty: put the secret in it"),
        (lambda p: p.mkdir(), "which is a directory"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00"), "which is not UTF-8 text"),
        (
            lambda p: p.write_text("tok_a\ntok_b\n"),
            "file {path} (api_token_file) has a line feed (U+000A) inside its value",
        ),
    ],
    ids=["missing", "empty", "only-a-newline", "directory", "not-text", "two-lines"],
)
def test_a_bad_secret_file_is_an_error_naming_the_key_and_the_file(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    """A missing, empty, unreadable or many-line secret file is refused, naming the key and the file, never the content."""
    path = tmp_path / "token"
    make(path)
    with pytest.raises(ConfigError) as caught:
        secrets(tmp_path, f"api_token_file = {toml(str(path))}")
    text = str(caught.value)
    assert "[providers.maple]" in text
    assert str(path) in text
    assert message.format(path=path) in text
    assert "tok_a" not in text
    assert "tok_b" not in text


def test_an_unreadable_secret_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret file this user may not read is an error naming the file and the permissions."""
    path = write(tmp_path / "token", TOKEN)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads every file: let the read fail as it would for anyone else

        def refused(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(ConfigError, match=r"api_token_file names .*token, which cannot be read"):
        secrets(tmp_path, f"api_token_file = {toml(str(path))}")


# -- *_command ------------------------------------------------------------------------------


def test_a_command_gives_what_it_prints(tmp_path: Path) -> None:
    """api_token_command: what the command prints on stdout, its trailing newline trimmed quietly."""
    command = script(tmp_path, f"print({TOKEN!r})")
    notices: list[str] = []
    assert secrets(tmp_path, f"api_token_command = {toml(command)}", notices=notices) == {"api_token": TOKEN}
    assert notices == []


def test_a_command_runs_once_per_run_however_many_profiles_and_checks_need_it(tmp_path: Path) -> None:
    """Two profiles reading one command, each checked twice: one Sources runs it once; a new one (a new run) again."""
    runs = tmp_path / "runs"
    command = script(tmp_path, f"open({str(runs)!r}, 'a').write('x')\nprint({TOKEN!r})")
    text = "".join(
        f'[providers.{name}]\ntype = "maple"\ncompany_id = "cmp_x"\napi_token_command = {toml(command)}\n'
        for name in ("a", "b")
    )
    cfg = configuration.load(write(tmp_path / "c.toml", text))
    sources = Sources({})
    for _ in range(2):
        for profile in cfg.profiles.values():
            assert profile.secrets(sources) == {"api_token": TOKEN}
    assert runs.read_text() == "x"
    cfg.profiles["a"].secrets(Sources({}))
    assert runs.read_text() == "xx"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"print({TOKEN!r})\nsys.exit(3)", "failed (exit status 3), and its output is not shown"),
        (
            f"sys.stderr.write('error: bad token {TOKEN}')\nsys.exit(1)",
            "failed (exit status 1), and its output is not shown",
        ),
        ("pass", "printed nothing: run it by hand to see why"),
        ("print('   ')", "printed nothing"),
        (
            f"print('{TOKEN[:8]}\\t{TOKEN[8:]}')",
            "the output of command `{command}` (api_token_command) has a tab (U+0009) inside",
        ),
        ("sys.stdout.buffer.write(b'\\xff\\xfe')", "printed something that is not UTF-8 text"),
    ],
    ids=["exit-status", "stderr-holds-the-secret", "nothing", "blank", "tab-inside", "not-text"],
)
def test_a_failing_command_is_an_error_naming_key_command_and_status_never_its_output(
    tmp_path: Path, body: str, message: str
) -> None:
    """A command that fails or prints nothing usable: an error naming the profile, the key, the command and its exit status; neither its stdout nor its stderr."""
    command = script(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        secrets(tmp_path, f"api_token_command = {toml(command)}")
    text = str(caught.value)
    assert "[providers.maple]" in text
    assert "api_token_command" in text
    assert message.format(command=command) in text
    for part in (TOKEN, TOKEN[:8], TOKEN[8:], "bad token"):
        assert part not in text


@pytest.mark.parametrize("in_a_run", [False, True], ids=["alone", "watching for a signal"])
def test_a_command_that_hangs_is_stopped_at_the_timeout(tmp_path: Path, in_a_run: bool) -> None:
    """A command that outlives the timeout (here 0.2 s) is stopped: an error saying so and how to look."""
    command = script(tmp_path, f"time.sleep(30)\nprint({TOKEN!r})")
    cancelled = threading.Event() if in_a_run else None
    sources = Sources({}, command_timeout_s=0.2, cancelled=cancelled)
    with pytest.raises(ConfigError) as caught:
        secrets(tmp_path, f"api_token_command = {toml(command)}", sources)
    assert "did not finish within 0.2 s and was stopped" in str(caught.value)
    assert f"run it by hand to see why: {command}" in str(caught.value)


def test_a_command_that_cannot_start_says_so(tmp_path: Path) -> None:
    """A command not on PATH is an error naming it, not a traceback."""
    with pytest.raises(
        ConfigError, match=r"api_token_command `no-such-password-manager read x` cannot be started"
    ):
        secrets(tmp_path, 'api_token_command = "no-such-password-manager read x"')


def test_a_command_that_only_echoes_its_own_argument_is_refused(tmp_path: Path) -> None:
    """`echo SECRET` as a command puts the secret in the configuration file: refused, without showing it."""
    with pytest.raises(ConfigError) as caught:
        secrets(tmp_path, f'api_token_command = "echo {TOKEN}"')
    assert "so the secret is in the configuration file" in str(caught.value)
    assert TOKEN not in str(caught.value)


# -- the configuration's keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'api_token_env = "A"\napi_token_file = "/x"',
            "api_token_env and api_token_file both say where api_token comes from: keep exactly one",
        ),
        (
            'api_token_file = "/x"\napi_token_command = "op read x"',
            "api_token_file and api_token_command both say",
        ),
        (f'api_token = "{TOKEN}"', "api_token: a credential is never written in the configuration file"),
        ('api_token_command = "op read \'x"', "api_token_command cannot be split into a command"),
        ('api_token_command = "  "', "api_token_command must be a command line that prints it"),
        ('api_token_file = ""', "api_token_file must be the path of the file that holds it"),
        ("api_token_file = 3", "api_token_file must be the path"),
        ('api_token_fil = "/x"', "did you mean 'api_token_file'?"),
    ],
)
def test_credential_keys_are_checked_when_the_file_is_read(tmp_path: Path, source: str, message: str) -> None:
    """Two sources for one role, a literal secret, a command that cannot be split: refused by key, the value never shown."""
    with pytest.raises(ConfigError) as caught:
        configuration.load(maple(tmp_path, source))
    assert message in str(caught.value)
    assert TOKEN not in str(caught.value)


# -- through the command line ------------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def job(tmp_path: Path) -> str:
    return str(write(tmp_path / "job.csv", "provider,invoice_id\nmaple,inv_1\nmaple,inv_2\n"))


@pytest.mark.parametrize("kind", ["file", "command"])
def test_run_sends_the_credential_from_a_file_or_a_command(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    """`run` with api_token_file or api_token_command voids with that value; a command printing to stderr shows none of it."""
    monkeypatch.delenv("MAPLE_API_TOKEN", raising=False)
    if kind == "file":
        source = f"api_token_file = {toml(str(write(tmp_path / 'token', TOKEN + chr(10))))}"
    else:
        command = script(tmp_path, f"sys.stderr.write('fetched {TOKEN} for you')\nprint({TOKEN!r})")
        source = f"api_token_command = {toml(command)}"
    with served() as sim:
        cfg = maple(tmp_path, source, url=sim.url)
        plan = runner.invoke(main, ["plan", job(tmp_path), "--config", str(cfg)])
        result = runner.invoke(main, ["run", job(tmp_path), "--config", str(cfg)])
        sent = [h.get("Authorization") for h in sim.requests]
    assert plan.exit_code == 0, plan.output
    assert result.exit_code == 0, result.output
    assert sent == [f"Bearer {TOKEN}"] * 2
    log = (tmp_path / "job.csv.log").read_text()
    terminal = capfd.readouterr()  # what reached file descriptors 1 and 2 themselves (a child's stderr would)
    for text in (plan.output, result.output, log, terminal.out, terminal.err):
        assert TOKEN not in text
        assert "for you" not in text


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_missing_secret_file_refuses_run_and_plan_before_sending(
    runner: CliRunner, tmp_path: Path, command: str
) -> None:
    """A secret file that is not there: run exits 2 with one error line, plan lists it as why it cannot run; nothing sent, no job recorded."""
    missing = tmp_path / "run" / "secrets" / "maple"
    with served() as sim:
        cfg = maple(tmp_path, f"api_token_file = {toml(str(missing))}", url=sim.url)
        result = runner.invoke(main, [command, job(tmp_path), "--config", str(cfg)])
        requests = len(sim.requests)
    assert result.exit_code == 2, result.output
    expected = f"api_token_file names {missing}, which does not exist"
    if command == "run":
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        assert expected in result.stderr
        with sqlite3.connect(tmp_path / "batchvoid.sqlite") as db:
            assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        db.close()
    else:
        assert result.stdout.endswith("Not runnable: 1 problem (listed on stderr).\n")
        assert expected in " ".join(result.stderr.split())
    assert requests == 0
    assert "Traceback" not in result.output


def test_a_wrong_key_from_a_file_echoed_by_the_provider_is_scrubbed(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A file's value goes through the same scrubbing: a 401 quoting it reaches no output, log or ledger."""
    wrong = "tok_from_file_5e8a1c"
    secret = write(tmp_path / "token", wrong + "\n")
    with served(SimulatorSettings.from_specs(["echo_credentials=true"])) as sim:
        cfg = maple(tmp_path, f"api_token_file = {toml(str(secret))}", url=sim.url)
        result = runner.invoke(main, ["run", job(tmp_path), "--config", str(cfg)])
    assert result.exit_code == 3, result.output
    assert f"Check {secret}" in result.output
    ledger = (tmp_path / "batchvoid.sqlite").read_bytes()
    for text in (result.output, (tmp_path / "job.csv.log").read_text()):
        assert "[redacted]" in text or "refused the credentials" in text
        assert wrong not in text
    assert wrong.encode() not in ledger


def test_a_rehearsal_reads_no_secret_file_and_runs_no_command(runner: CliRunner, tmp_path: Path) -> None:
    """--simulate with api_token_file and a command that would fail: it rehearses on the simulator's test credentials."""
    text = (
        '[providers.maple]\ntype = "maple"\ncompany_id = "cmp_x"\napi_token_file = "/no/such/file"\n'
        f'[providers.rapyd]\ntype = "rapyd"\naccess_key_command = {toml(script(tmp_path, "sys.exit(9)"))}\n'
        'secret_key_env = "NOT_SET_ANYWHERE"\n'
    )
    cfg = write(tmp_path / "c.toml", text)
    jobs = write(tmp_path / "j.csv", "provider,invoice_id\nmaple,inv_1\nrapyd,inv_2\n")
    plan = runner.invoke(main, ["plan", str(jobs), "--config", str(cfg), "--simulate"])
    result = runner.invoke(main, ["run", str(jobs), "--config", str(cfg), "--simulate"])
    assert plan.exit_code == 0, plan.output
    assert result.exit_code == 0, result.output


def test_providers_lists_the_file_and_command_keys(runner: CliRunner) -> None:
    """`batchvoid providers` names *_file and *_command next to *_env, as text and as JSON."""
    text = runner.invoke(main, ["providers"]).stdout
    assert "access_key_env (default RAPYD_ACCESS_KEY)" in text
    assert "*_file" in text
    assert "*_command" in text
    data = runner.invoke(main, ["providers", "--json"]).stdout
    assert '"credential_sources"' in data
    assert '"access_key_file"' in data


@pytest.mark.parametrize(
    ("recorded", "signum", "to_group"),
    [(False, signal.SIGINT, True), (True, signal.SIGTERM, False)],
    ids=["ctrl-c while a new job is recorded", "kill while a recorded job's adapters are made"],
)
def test_a_signal_while_a_command_runs_exits_130_at_once(
    tmp_path: Path, recorded: bool, signum: signal.Signals, to_group: bool
) -> None:
    """Ctrl-C (to the command too) or a kill (to batchvoid only) while a *_command runs: exit 130 at once, nothing sent."""
    started = tmp_path / "started"
    command = script(tmp_path, f"open({str(started)!r}, 'w').close()\ntime.sleep(60)\nprint('x')")
    config = maple(tmp_path, f"api_token_command = {toml(command)}", url="https://billing.invalid")
    job = write(tmp_path / "job.csv", "provider,invoice_id\nmaple,inv_1\n")
    ledger = tmp_path / "ledger.sqlite"
    if recorded:  # the run resumes it: the command runs when the adapters are made, after the ingest
        cfg = configuration.load(config)
        with open_ledger(ledger) as book:
            rows = jobfile.read(job, cfg.profiles)
            new = NewJob(
                "job.csv", str(job), jobfile.sha256(job), cfg.fingerprint(), rows, False, targets(cfg)
            )
            assert book.ingest(new).recorded
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchvoid",
            "run",
            str(job),
            "--config",
            str(config),
            "--ledger",
            str(ledger),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), run.communicate()
        sent_at = time.monotonic()
        if to_group:
            os.killpg(run.pid, signum)
        else:
            os.kill(run.pid, signum)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:  # the run or its command hung on: leave nothing behind
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
    assert run.returncode == 130, stderr
    assert time.monotonic() - sent_at < 10  # not the command's minute
    assert f"error: interrupted by {signum.name}" in stderr
    assert "failed" not in stderr
    with open_ledger(ledger) as book:
        recorded_job = book.job("job.csv")
        assert (recorded_job is not None) is recorded  # a new job's ingest rolled back
        if recorded_job is not None:
            assert book.attempt_count(recorded_job) == 0
