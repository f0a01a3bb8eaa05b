"""The zonegate command line: help, exit codes, error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def zg(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zonegate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize("sub", ["check", "lb", "dns", "httpdns", "control", "ctl", "demo"])
def test_every_subcommand_has_help(sub):
    r = zg(sub, "--help")
    assert r.returncode == 0
    assert "usage: zonegate" in r.stdout


def test_check_good_and_bad_files():
    good = zg("check", "examples/two-zones.yaml")
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = zg("check", "examples/bad.yaml")
    assert bad.returncode == 1
    assert "examples/bad.yaml:" in bad.stderr


def test_lb_refuses_an_invalid_file_with_every_problem(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(
        "zones: {a: {}}\n"
        "pools:\n"
        "  p: {zone: b, backends: [{address: '127.0.0.1:80'}]}\n"
        "  q: {zone: a, backends: [{address: 'x:99999'}]}\n"
    )
    r = zg("lb", str(f), "--zone", "a")
    assert r.returncode == 1
    assert f"{f}:3:" in r.stderr
    assert f"{f}:4:" in r.stderr
    assert "unknown zone 'b'" in r.stderr
    assert "port must be" in r.stderr


def test_lb_refuses_an_unknown_zone():
    r = zg("lb", "examples/two-zones.yaml", "--zone", "nowhere")
    assert r.returncode != 0
    assert "no zone 'nowhere'" in r.stderr


def test_lb_refuses_zero_workers():
    r = zg("lb", "examples/two-zones.yaml", "--zone", "changping", "--workers", "0")
    assert r.returncode == 2
