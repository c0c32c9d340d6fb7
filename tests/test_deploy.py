"""The Dockerfile and the Kubernetes CronJob example say what the README promises of them.

No image is built here (that needs a Docker daemon and the base image); these check the
properties a reader relies on, and that the CronJob's command line and configuration use
options and keys batchvoid has.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from batchvoid.providers import REGISTRY
from tests.test_readme import COMMANDS, HELP, invocations, option_names

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
CRONJOB = (REPO / "deploy" / "kubernetes" / "cronjob.yaml").read_text(encoding="utf-8")


def embedded_config() -> dict[str, object]:
    """The batchvoid.toml inside the ConfigMap (a YAML block scalar, indented four spaces)."""
    block = CRONJOB.split("batchvoid.toml: |\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return tomllib.loads("\n".join(lines))


def yaml_value(key: str) -> str:
    match = re.search(rf"^\s*{key}:\s*(\S+)", CRONJOB, re.MULTILINE)
    assert match, f"{key} is not in the CronJob"
    return match[1]


def test_the_image_is_small_non_root_with_the_ledger_on_a_volume() -> None:
    """python:3.11-slim, a non-root numeric USER, the ledger directory as VOLUME and WORKDIR, batchvoid as ENTRYPOINT."""
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)[-1] == "python:3.11-slim"
    (user,) = re.findall(r"^USER (\d+)(?::\d+)?$", DOCKERFILE, re.MULTILINE)
    assert int(user) != 0
    assert re.search(r'^VOLUME \["/var/lib/batchvoid"\]$', DOCKERFILE, re.MULTILINE)
    assert re.findall(r"^WORKDIR (\S+)", DOCKERFILE, re.MULTILINE)[-1] == "/var/lib/batchvoid"
    assert re.search(r'^ENTRYPOINT \["batchvoid"\]$', DOCKERFILE, re.MULTILINE)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"


def test_the_cronjob_runs_one_at_a_time_and_outlasts_the_drain() -> None:
    """concurrencyPolicy Forbid, and a grace period longer than the drain (the longest timeout_s + 1 s)."""
    assert yaml_value("concurrencyPolicy") == "Forbid"
    assert yaml_value("restartPolicy") == "Never"
    config = embedded_config()
    timeouts = [config["defaults"].get("timeout_s", 30)]  # type: ignore[attr-defined]
    timeouts += [table.get("timeout_s", timeouts[0]) for table in config["providers"].values()]  # type: ignore[attr-defined]
    assert int(yaml_value("terminationGracePeriodSeconds")) > max(timeouts) + 1


def test_the_cronjob_keeps_the_ledger_on_a_claim_and_reads_credentials_from_secret_files() -> None:
    """The ledger's mount is a PersistentVolumeClaim; every credential is a *_file key of its type under the Secret's mount."""
    assert "persistentVolumeClaim:" in CRONJOB
    assert re.search(r"\{name: ledger, mountPath: /var/lib/batchvoid\}", CRONJOB)
    secret_mount = re.search(r"\{name: credentials, mountPath: (\S+), readOnly: true\}", CRONJOB)
    assert secret_mount
    for name, table in embedded_config()["providers"].items():  # type: ignore[attr-defined]
        roles = {key.removesuffix("_env") for key in REGISTRY[table["type"]].credentials}
        files = {key.removesuffix("_file"): value for key, value in table.items() if key.endswith("_file")}
        assert set(files) == roles, f"{name}: one *_file key per credential role"
        assert not any(key.endswith("_env") for key in table), f"{name}: credentials from files only"
        for path in files.values():
            assert path.startswith(secret_mount[1] + "/"), path


def test_the_cronjob_command_line_uses_real_options() -> None:
    """The `batchvoid run` in the CronJob passes only options that `batchvoid run` has."""
    args = CRONJOB.split("exec batchvoid", 1)[1].split("env:", 1)[0].split("securityContext:", 1)[0]
    ((path, flags),) = list(invocations("batchvoid " + " ".join(args.split())))
    assert path == "batchvoid run"
    known = set().union(*option_names(COMMANDS[path]), HELP)
    assert set(flags) <= known
    assert {"--config", "--ledger", "--job-id"} <= set(flags)
