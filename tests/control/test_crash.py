"""kill -9 during a stream of writes loses no acknowledged version (SQLiteStore).

`crash_writer` stands in for the control plane: it appends versions as fast as it can
and prints each one once `append` has returned. The test kills it with SIGKILL,
reopens the file and checks every printed version is there, byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zonegate.control.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


class Writer:
    """One crash_writer process and the lines it printed (complete lines only)."""

    def __init__(self, db: Path, who: str) -> None:
        self.stderr = db.with_name(f"{who}.stderr")
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.control.crash_writer", str(db), who, "20"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: list[str] = []
        self.first = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill was not acknowledged
                self.lines.append(line)
                self.first.set()

    def kill(self) -> dict[int, tuple[str, str]]:
        """SIGKILL it; return version -> (state hash, who) of every acknowledged line."""
        self.proc.send_signal(signal.SIGKILL)
        status = self.proc.wait(10)
        assert status == -signal.SIGKILL, f"writer exited {status}: {self.stderr.read_text()}"
        self.reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        out = {}
        for line in self.lines:
            version, digest, who = line.split()
            out[int(version)] = (digest, who)
        return out


def check_store(db: Path, acked: dict[int, tuple[str, str]]) -> int:
    """Every acknowledged version is stored as printed; return the latest version."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()

    async def read() -> int:
        async with SQLiteStore(db) as store:
            latest = await store.latest()
            assert latest is not None
            history = []
            while len(history) < latest.version:
                history += await store.history(since=len(history), limit=1000)
            # Dense, chained, every row whole (a torn row would not parse).
            assert [a.version for a in history] == list(range(1, latest.version + 1))
            assert all(a.previous_version == a.version - 1 for a in history)
            for version, (digest, who) in acked.items():
                state = await store.get(version)
                assert state is not None, f"acknowledged version {version} lost"
                assert hashlib.sha256(state.model_dump_json().encode()).hexdigest() == digest
                assert history[version - 1].who == who
            return latest.version

    return asyncio.run(read())


def run_and_kill(db: Path, whos: list[str], seconds: float = 0.5) -> dict[int, tuple[str, str]]:
    writers = [Writer(db, who) for who in whos]
    try:
        for w in writers:
            assert w.first.wait(15), f"writer never acknowledged a version: {w.stderr.read_text()}"
        time.sleep(seconds)
    finally:
        killed = [w.kill() for w in writers]
    acked: dict[int, tuple[str, str]] = {}
    for mine in killed:
        assert not mine.keys() & acked.keys(), "two writers acknowledged the same version"
        acked.update(mine)
    return acked


def test_kill9_loses_no_acknowledged_version(tmp_path: Path) -> None:
    db = tmp_path / "control.db"
    acked: dict[int, tuple[str, str]] = {}
    for round_ in range(3):  # kill, restart on the same file, kill again
        new = run_and_kill(db, [f"w{round_}"])
        assert len(new) >= 5
        assert min(new) > max(acked, default=0)
        acked.update(new)
        latest = check_store(db, acked)
        # At most the one append in flight at the kill is stored but unacknowledged.
        assert max(acked) <= latest <= max(acked) + 1


def test_two_processes_racing_each_version_has_one_winner(tmp_path: Path) -> None:
    db = tmp_path / "control.db"
    acked = run_and_kill(db, ["a", "b"], seconds=0.7)
    assert {who for _, who in acked.values()} == {"a", "b"}
    latest = check_store(db, acked)
    assert max(acked) <= latest <= max(acked) + 2
