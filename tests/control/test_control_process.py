"""The real `zonegate control` process: SQLite store, ctl in process, kill -9, restart."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.control.topo import API, TOPO_DATA
from tests.peers.processes import start_process
from zonegate.control.api import hash_token
from zonegate.control.ctl import run_ctl

pytestmark = pytest.mark.timeout(60)

READY = r"zonegate control ready: (?P<url>http://\S+) version (?P<version>\d+)"


def _ctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_ctl(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_cutover_survives_kill_9(tmp_path: Path) -> None:
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))  # JSON is YAML
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: ops, role: operator, sha256: {hash_token('op-secret')}}}\n"
        f"  - {{name: viewer, role: read, sha256: {hash_token('r-secret')}}}\n"
    )
    db = tmp_path / "data" / "control.db"
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(topo),
        "--store", f"sqlite://{db}", "--listen", "127.0.0.1:0", "--tokens", str(tokens),
    ]  # fmt: skip
    env = {"ZONEGATE_BUG_RAISE": "0"}
    proc = start_process(argv, READY, timeout=20, env=env)
    try:
        assert proc.match is not None
        assert proc.match["version"] == "1"
        url = proc.match["url"]
        # the first URL is dead: ctl moves on to the next one
        ctl = ["--control", "http://127.0.0.1:1", "--control", url, "--token", "op-secret"]

        status, out, _ = _ctl(*ctl, "cutover", API, "--to", "yanqing", "--dry-run")
        assert status == 0
        assert "nothing written" in out
        assert "100.0%" in out

        status, _, err = _ctl(*ctl, "cutover", API, "--to", "yanqing")
        assert status == 1  # no reason
        assert "422" in err

        status, _, err = _ctl(
            "--control", url, "--token", "r-secret", "cutover", API, "--to", "yanqing",
            "--reason", "drill",
        )  # fmt: skip
        assert status == 1
        assert "403" in err

        status, out, err = _ctl(*ctl, "cutover", API, "--to", "yanqing", "--reason", "drill")
        assert status == 0, err
        assert out.startswith("version 2")

        state = httpx.get(f"{url}/v1/state", headers={"Authorization": "Bearer r-secret"})
        assert state.status_code == 200
        assert state.json()["version"] == 2
        assert state.json()["split"][API]["zones"]["yanqing"] == {
            "lower": 0,
            "upper": 100,
            "domain": "api-yq.example.test",
        }

        status, out, _ = _ctl(*ctl, "history")
        assert status == 0
        assert "ops  cutover  (drill)" in out

        proc.kill()  # SIGKILL: no graceful shutdown
        proc.restart(timeout=20)
        assert proc.match is not None
        assert proc.match["version"] == "2"
        url = proc.match["url"]
        status, out, _ = _ctl("--control", url, "--token", "r-secret", "state")
        assert status == 0
        assert out.startswith("version 2")
        assert "(cut over)" in out

        status, out, _ = _ctl("--control", url, "--token", "op-secret", "restore", API,
                              "--reason", "drill over")  # fmt: skip
        assert status == 0
        assert out.startswith("version 3")
    finally:
        status = proc.stop()
    assert status == 0, proc.describe()


def test_ctl_commands_against_a_memory_store(tmp_path: Path) -> None:
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"tokens": [{"name": "ops", "role": "operator", "sha256": hash_token("t")}]})
    )
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(topo),
        "--store", "memory://", "--listen", "127.0.0.1:0", "--tokens", str(tokens),
    ]  # fmt: skip
    proc = start_process(argv, READY, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    try:
        assert proc.match is not None
        ctl = ["--control", proc.match["url"], "--token", "t", "--reason", "r"]
        new_split = tmp_path / "split.yaml"
        new_split.write_text(
            "sharding: 100\nzones:\n"
            "  changping: {lower: 0, upper: 20, domain: api-cp.example.test}\n"
            "  yanqing: {lower: 20, upper: 100, domain: api-yq.example.test}\n"
        )
        status, out, err = _ctl("split", API, "--file", str(new_split), *ctl)
        assert (status, out.splitlines()[0]) == (0, "version 2"), err
        status, out, err = _ctl("zone", "shanghai", "drain", *ctl)
        assert "zone shanghai: enabled -> drain" in out
        status, out, err = _ctl("backend", "web-cp", "cp-1", "disable", *ctl)
        assert "backend web-cp/cp-1: enabled -> disabled" in out
        status, out, err = _ctl("rollback", "1", "--dry-run", *ctl)
        assert status == 0
        assert "20.0%" in out
        assert "50.0%" in out
        status, out, err = _ctl("rollback", "1", *ctl)
        assert out.startswith("version 5")
        status, out, err = _ctl("state", "--version", "2", "--json", *ctl[:4])
        assert json.loads(out)["split"][API]["zones"]["changping"]["upper"] == 20
        status, out, err = _ctl("zone", "mars", "drain", *ctl)
        assert status == 1
        assert err.startswith("zonegate ctl: 404 ")
        status, out, err = _ctl("split", API, "--file", str(tmp_path / "missing.yaml"), *ctl)
        assert status == 2
        assert _ctl("bogus")[0] == 2
    finally:
        assert proc.stop() == 0, proc.describe()


@pytest.mark.parametrize(
    ("store", "status", "message"),
    [
        ("etcd://127.0.0.1:1", 2, "no endpoint answered"),
        ("ftp://x", 2, "unknown scheme"),
        ("sqlite://", 2, "no file path"),
    ],
)
def test_bad_store_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str, status: int, message: str
) -> None:
    from zonegate.control.server import run_control

    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    assert run_control(str(topo), store_url=store, listen="127.0.0.1:0") == status
    assert message in capsys.readouterr().err


def test_bad_topology_and_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zonegate.control.server import run_control

    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: 3\n")
    assert run_control(str(bad), store_url="memory://") == 1
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: [{name: a, role: root, sha256: x}]\n")
    assert run_control(str(topo), store_url="memory://", token_file=str(tokens)) == 1
    assert "--tokens" in capsys.readouterr().err


def test_sigterm_answers_open_long_polls_at_once(tmp_path: Path) -> None:
    """A stop does not wait for long-polls: they get 304 and the process exits 0."""
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(topo),
        "--store", "memory://", "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    proc = start_process(argv, READY, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    assert proc.match is not None
    url = proc.match["url"]
    answers: list[int] = []

    def poll() -> None:
        r = httpx.get(f"{url}/v1/state", params={"since": 1, "timeout": 30}, timeout=40)
        answers.append(r.status_code)

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for t in pollers:
        t.start()
    time.sleep(0.5)  # the long-polls are open
    t0 = time.monotonic()
    try:
        proc.signal(signal.SIGTERM)
        assert proc.proc is not None
        assert proc.proc.wait(timeout=10) == 0
        stopped = time.monotonic() - t0
    finally:
        proc.kill()
    for t in pollers:
        t.join(timeout=10)
    print(f"\nstopped {stopped * 1000:.0f} ms after SIGTERM with 3 open long-polls")
    assert answers == [304, 304, 304]
    assert stopped < 3  # uvicorn would wait up to timeout_graceful_shutdown (5 s)


def test_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Issue 12 item 24: `zonegate control` on an address another socket listens on
    prints one line naming the address (not uvicorn's traceback) and exits 2."""
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps({"tokens": [{"name": "ops", "role": "operator", "sha256": hash_token("t")}]})
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "zonegate", "control", str(topo), "--store", "memory://",
             "--tokens", str(tokens), "--listen", address],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"zonegate control: cannot listen on {address}: Address already in use"
    ]


def test_ctl_401_and_403_say_how_to_pass_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 item 28: a refused token names --token / ZONEGATE_TOKEN and the
    control plane's --tokens file, instead of a bare 401."""
    monkeypatch.delenv("ZONEGATE_TOKEN", raising=False)
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(TOPO_DATA))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "ops", "role": "operator", "sha256": hash_token("t")},
                    {"name": "viewer", "role": "read", "sha256": hash_token("r")},
                ]
            }
        )
    )
    argv = [
        sys.executable, "-m", "zonegate.control.server", str(topo),
        "--store", "memory://", "--listen", "127.0.0.1:0", "--tokens", str(tokens),
    ]  # fmt: skip
    proc = start_process(argv, READY, timeout=20, env={"ZONEGATE_BUG_RAISE": "0"})
    try:
        assert proc.match is not None
        write = ["--control", proc.match["url"], "zone", "shanghai", "drain", "--reason", "r"]
        status, _, err = _ctl(*write)
        assert status == 1
        assert err.startswith("zonegate ctl: 401 ")
        assert "--token TOKEN or set ZONEGATE_TOKEN" in err
        assert "zonegate control --tokens FILE" in err
        status, _, err = _ctl(*write, "--token", "wrong")
        assert status == 1
        assert "401 unknown token" in err
        assert "not one it knows" in err
        status, _, err = _ctl(*write, "--token", "r")
        assert status == 1
        assert "403" in err
        assert "role is operator" in err
        status, out, err = _ctl(*write, "--token", "t")
        assert (status, err) == (0, "")
        assert out.startswith("version 2")
    finally:
        assert proc.stop() == 0, proc.describe()


def test_control_help_lists_every_store() -> None:
    """Issue 12 item 28: `zonegate control --help` names etcd:// beside sqlite and memory."""
    done = subprocess.run(
        [sys.executable, "-m", "zonegate", "control", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for scheme in ("sqlite:///PATH", "memory://", "etcd://HOST:PORT,HOST:PORT[/PREFIX]"):
        assert scheme in text
