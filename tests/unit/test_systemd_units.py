"""The shipped systemd units (``deploy/systemd/``): valid, sandboxed, and as documented.

PID 1 is not systemd where the tests run, so nothing is started here;
``systemd-analyze`` reads the files offline (``verify``: syntax, commands
that exist; ``security``: the sandbox's exposure score), with ``/opt/idme``
mapped to this checkout and its virtualenv so the commands resolve.
``deploy/rehearse`` runs each unit's ``ExecStart=``.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app import ROOT

UNITS = ROOT / "deploy" / "systemd"
DOC = (ROOT / "docs" / "deploy.md").read_text()
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed"
)
VENV_BIN = "/opt/idme/.venv/bin/idp-admin"
COMMANDS = {
    "idme-web@.service": "serve --listen 127.0.0.1:%i",
    "idme-deliver.service": "mail deliver --loop",
    "idme-refresh.service": "source refresh --loop",
}
# The exposure systemd-analyze security may report, times ten (its
# --threshold): "OK" starts below 3.0; the units score 1.3.
MAX_EXPOSURE = 20


def unit(name: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit, by key (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def rendered(tmp_path: Path) -> list[Path]:
    """The units with /opt/idme's virtualenv as this test's, for verify."""
    venv = Path(sys.executable).parent.parent
    out = []
    for name in COMMANDS:
        text = (UNITS / name).read_text().replace("/opt/idme/.venv", str(venv))
        target = tmp_path / (name.replace("@.", "@6543.") if "@." in name else name)
        target.write_text(text)
        out.append(target)
    return out


def test_the_units_are_the_three_documented_ones():
    assert sorted(p.name for p in UNITS.iterdir()) == sorted(COMMANDS)
    for name in COMMANDS:
        assert name.removesuffix(".service") in DOC, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_unit_runs_its_command_as_the_service_user(name):
    values = unit(name)
    assert values["ExecStart"] == [
        f"{VENV_BIN} /etc/idme/production.ini {COMMANDS[name]}"
    ]
    assert values["User"] == values["Group"] == ["idme"]
    assert values["EnvironmentFile"] == ["/etc/idme/idme.env"]
    assert values["Restart"] == ["on-failure"]
    assert int(values["StartLimitBurst"][0]) > 1
    assert values["KillSignal"] == ["SIGTERM"]
    # Written nowhere on disk: nothing is made writable.
    assert "ReadWritePaths" not in values
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert values[key] == [value], key


def test_a_stopping_node_gets_longer_than_its_grace():
    """systemd's SIGKILL must not cut short requests ``serve`` is finishing."""
    stop = int(unit("idme-web@.service")["TimeoutStopSec"][0])
    grace = re.search(r"its grace \((\d+) s by default\)", DOC)
    assert grace, "docs/deploy.md states serve's grace"
    assert stop > int(grace.group(1))


@needs_analyze
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    files = rendered(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # verify exits 0 on a key it ignores or a value it cannot parse; it
    # names the file on stderr.
    assert [line for line in result.stderr.splitlines() if str(tmp_path) in line] == []
    broken = files[1].read_text().replace("UMask=0077", "UMask=0077\nRestart=sometimes")
    files[1].write_text(broken)
    again = subprocess.run(
        [ANALYZE, "verify", str(files[1])], capture_output=True, text=True, timeout=60
    )
    assert "restart specifier" in again.stderr


@needs_analyze
def test_the_sandbox_scores_ok_with_systemd_analyze_security(tmp_path):
    files = rendered(tmp_path)
    result = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=yes",
            f"--threshold={MAX_EXPOSURE}",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    scores = re.findall(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert len(scores) == len(files)
    # The check can fail: without the sandbox the same unit scores far worse.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    worse = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=yes",
            f"--threshold={MAX_EXPOSURE}",
            str(bare),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worse.returncode != 0


def test_the_env_example_names_every_secret_the_settings_read():
    from idp.settings import SECRET_ENV

    example = (ROOT / "deploy" / "idme.env.example").read_text()
    named = set(re.findall(r"(?m)^#? ?(IDP_[A-Z_]+)=", example))
    assert named == set(SECRET_ENV.values())
    assert "0600" in example


def test_the_admin_wrapper_reads_the_env_file_without_running_it(tmp_path):
    """A line of idme.env is data: ``$(...)`` in it is refused, never run."""
    script = (ROOT / "deploy" / "idme-admin").read_text()
    etc = tmp_path / "etc"
    etc.mkdir()
    marker = tmp_path / "ran"
    (etc / "idme.env").write_text(f"IDP_HMAC_KEY=$(touch {marker})\n")
    local = script.replace("ETC=/etc/idme", f"ETC={etc}").replace(
        "SERVICE_USER=idme", f"SERVICE_USER={getpass.getuser()}"
    )
    (tmp_path / "idme-admin").write_text(local)
    result = subprocess.run(
        ["bash", str(tmp_path / "idme-admin"), "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "line 1 is not NAME=value" in result.stderr
    assert not marker.exists()
