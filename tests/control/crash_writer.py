"""A control-plane stand-in for the crash tests: appends versions until killed.

Usage: ``python -m tests.control.crash_writer DB WHO [SECONDS]`` (from the repo root).

Appends to the SQLite store DB as fast as it can (version 1 if the store is empty,
then `topo.step`), and after each acknowledged append prints one line and flushes:
``VERSION SHA256(state JSON) WHO``. A `VersionConflict` (another writer won) is
retried from the new latest version. Stops by itself after SECONDS (default 30), so
a test that dies never leaves it running.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time

from tests.control.topo import first, step
from zonegate.control.sqlite import SQLiteStore
from zonegate.errors import VersionConflict


async def main(path: str, who: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with SQLiteStore(path) as store:
        while time.monotonic() < deadline:
            latest = await store.latest()
            state, audit = first(who) if latest is None else step(latest, who)
            try:
                await store.append(state, audit, expected_version=state.version - 1)
            except VersionConflict:
                continue
            digest = hashlib.sha256(state.model_dump_json().encode()).hexdigest()
            print(state.version, digest, who, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 30))
