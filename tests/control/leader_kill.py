"""Kill the etcd leader under a paced write loop and measure the write gap.

One run: an `EtcdStore` whose first endpoint is the leader appends a version every
`pace` seconds; after `before` seconds the leader is killed (SIGKILL by PID) and the
loop goes on for `after` seconds more (and at most `max_writes` writes). The run
reports the longest time between two acknowledged writes (the gap the kill caused),
the writes that failed, and checks the history afterwards: every acknowledged write
must be there, at its version, byte for byte. The victim is restarted at the end.

    python -m tests.control.leader_kill [--kills 10]

starts its own 3-member cluster in a temporary directory, runs `--kills` runs and
prints each one and min/median/max of the gaps (the figures in docs/control.md).
`tests/control/test_etcd_leader_kill.py` runs the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from tests.control.etcd_cluster import EtcdCluster, ensure_etcd
from tests.control.topo import first, step
from zonegate.control.etcd import EtcdStore
from zonegate.control.model import AuditEntry, DesiredState
from zonegate.errors import StoreUnavailable, VersionConflict


@dataclass
class KillRun:
    """What one leader kill did to the write loop."""

    gap: float
    """Longest seconds between two acknowledged writes (the kill falls inside it)."""
    acked: int
    """Writes acknowledged."""
    acked_after_kill: int
    """Writes acknowledged after the kill (writes resumed when > 0)."""
    failed: int
    """Writes that raised StoreUnavailable (a 503 through the API)."""
    applied_unacked: int
    """Failed writes found applied afterwards (allowed: the client was told 503)."""
    lost: list[int] = field(default_factory=list)
    """Versions acknowledged but missing or different in the history (must be empty)."""

    def line(self) -> str:
        return (
            f"gap {self.gap * 1000:6.0f} ms  acked {self.acked:4d} "
            f"(after kill {self.acked_after_kill:4d})  failed {self.failed}  "
            f"applied-unacked {self.applied_unacked}  lost {len(self.lost)}"
        )


async def leader_kill_run(
    cluster: EtcdCluster,
    *,
    before: float = 0.3,
    after: float = 2.5,
    pace: float = 0.02,
    max_writes: int = 1000,
) -> KillRun:
    """One run (see the module docstring); restarts the killed member before returning."""
    leader = cluster.leader()
    endpoints = cluster.endpoints[leader:] + cluster.endpoints[:leader]
    store = EtcdStore(endpoints, prefix=f"/zonegate-kill/{uuid.uuid4().hex}/")
    acked: dict[int, tuple[DesiredState, AuditEntry]] = {}
    ack_times: list[float] = []
    failed: list[tuple[DesiredState, AuditEntry]] = []
    try:
        current, audit = first()
        await store.append(current, audit, expected_version=0)
        acked[1] = (current, audit)
        start = time.monotonic()
        ack_times.append(start)
        kill_at = start + before
        end = kill_at + after
        killed = False
        for _ in range(max_writes):
            now = time.monotonic()
            if now >= end:
                break
            if not killed and now >= kill_at:
                cluster.kill(leader)
                killed, kill_at = True, time.monotonic()
            state, audit = step(current)
            try:
                await store.append(state, audit, expected_version=current.version)
            except StoreUnavailable:
                failed.append((state, audit))
                current = await _reread(store, current)
                continue
            except VersionConflict:  # a failed write of ours was applied after all
                current = await _reread(store, current)
                continue
            acked[state.version] = (state, audit)
            ack_times.append(time.monotonic())
            current = state
            await asyncio.sleep(pace)
        gaps = [b - a for a, b in itertools.pairwise(ack_times)]
        history = {a.version: a for a in await store.history(limit=1000)}
        states = {v: await store.get(v) for v in acked}
        lost = [v for v, (s, a) in acked.items() if history.get(v) != a or states.get(v) != s]
        applied = sum(history.get(s.version) == a for s, a in failed)
        return KillRun(
            gap=max(gaps, default=0.0),
            acked=len(acked),
            acked_after_kill=sum(t > kill_at for t in ack_times),
            failed=len(failed),
            applied_unacked=applied,
            lost=lost,
        )
    finally:
        await store.close()
        cluster.restart(leader)


async def _reread(store: EtcdStore, current: DesiredState) -> DesiredState:
    """The latest state, retried while the store is unavailable (bounded)."""
    for _ in range(20):
        try:
            latest = await store.latest()
        except StoreUnavailable:
            continue
        return latest if latest is not None else current
    raise StoreUnavailable("etcd never came back after the leader kill")


def summary(runs: list[KillRun]) -> str:
    """min/median/max gap and the failed/lost counts of several runs."""
    gaps = [r.gap * 1000 for r in runs]
    return (
        f"{len(runs)} leader kills: gap min {min(gaps):.0f} ms, median "
        f"{statistics.median(gaps):.0f} ms, max {max(gaps):.0f} ms; failed writes "
        f"{sum(r.failed for r in runs)} (applied anyway {sum(r.applied_unacked for r in runs)}); "
        f"acknowledged writes lost {sum(len(r.lost) for r in runs)}"
    )


async def _main(kills: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zonegate-etcd-") as tmp, EtcdCluster(tmp) as cluster:
        runs = []
        for i in range(kills):
            run = await leader_kill_run(cluster)
            print(f"kill {i + 1:2d}: {run.line()}", flush=True)
            runs.append(run)
        print(summary(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="leader kills (default 10)")
    args = parser.parse_args()
    reason = ensure_etcd()
    if reason is not None:
        raise SystemExit(reason)
    asyncio.run(_main(args.kills))


if __name__ == "__main__":
    main()
