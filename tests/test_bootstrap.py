"""scripts/bootstrap.sh and scripts/apt-install.sh, with a fake apt-get (issue 12 items 21, 22).

The fake apt-get is a real program on PATH that records its arguments and whether the
lock file was still held when it ran; the lock is a real fcntl lock held by this process.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APT_INSTALL = ROOT / "scripts" / "apt-install.sh"
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"

FAKE_APT_GET = """#!{python}
import fcntl, sys
with open({lock!r}, "a") as f:
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        state = "free"
    except OSError:
        state = "held"
with open({log!r}, "a") as log:
    log.write(state + " " + " ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """(env with a fake apt-get first on PATH and APT_LOCKS set, lock file, call log)."""
    lock, log = tmp_path / "lock-frontend", tmp_path / "apt.log"
    lock.touch()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "apt-get"
    fake.write_text(FAKE_APT_GET.format(python=sys.executable, lock=str(lock), log=str(log)))
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", APT_LOCKS=str(lock))
    return env, lock, log


def test_apt_install_waits_for_a_held_lock_and_says_so(fake_apt):
    env, lock, log = fake_apt
    with open(lock, "a") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        release = threading.Timer(1.5, fcntl.lockf, (held, fcntl.LOCK_UN))
        release.start()
        try:
            done = subprocess.run(
                [APT_INSTALL, "dnsutils", "unbound"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            release.cancel()
            release.join()
    assert done.returncode == 0, done.stderr
    assert f"the dpkg lock is held by pid {os.getpid()}" in done.stdout
    assert "waiting for it" in done.stdout
    calls = log.read_text().splitlines()
    assert calls == [
        "free -o DPkg::Lock::Timeout=600 update -qq",
        "free -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends dnsutils unbound",
    ]


def test_apt_install_free_lock_runs_at_once_without_a_waiting_line(fake_apt):
    env, _, log = fake_apt
    done = subprocess.run(
        [APT_INSTALL, "make"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "waiting" not in done.stdout
    assert len(log.read_text().splitlines()) == 2


def test_apt_install_gives_up_with_a_message_after_its_timeout(fake_apt):
    env, lock, log = fake_apt
    with open(lock, "a") as held:
        fcntl.lockf(held, fcntl.LOCK_EX)
        done = subprocess.run(
            [APT_INSTALL, "make"],
            env={**env, "APT_LOCK_TIMEOUT": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "still held after 1s" in done.stderr
    assert not log.exists()


def listed(mode: str) -> list[str]:
    out = subprocess.run(
        [BOOTSTRAP, "--list", mode], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.split()


def test_demo_installs_only_python_and_test_adds_the_peers():
    assert listed("demo") == ["python3", "python3-venv"]
    peers = {"dnsutils", "unbound", "etcd-server", "chromium", "keepalived", "nftables", "haproxy"}
    assert peers <= set(listed("test"))
    assert set(listed("demo")) <= set(listed("test"))


def test_readme_names_exactly_what_each_mode_installs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What gets installed", 1)[1].split("\n## ", 1)[0]
    demo_part, test_part = section.split("`make test`", 1)
    for pkg in listed("demo"):
        assert f"`{pkg}`" in demo_part
    for pkg in set(listed("test")) - set(listed("demo")):
        assert f"`{pkg}`" in test_part
        assert f"`{pkg}`" not in demo_part


def test_bootstrap_refuses_an_unknown_mode():
    done = subprocess.run([BOOTSTRAP, "all"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_make_demo_bootstraps_demo_only():
    plan = subprocess.run(
        ["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "bootstrap.sh demo" in plan
    assert "bootstrap.sh test" not in plan
