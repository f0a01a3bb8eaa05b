"""Read HAProxy's Runtime API answers (pure).

`show stat` (CSV), `show servers state` (format 1), `show info` and the master's
`show proc`, each as HAProxy 2.6 prints them. Anything else raises
`RemoteProtocolError` with the text HAProxy sent, never a bare parse crash.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from zonegate.errors import RemoteProtocolError
from zonegate.lb.haproxy.model import ReportedState, ServerAdmin, ServerKey, ServerReported

Row = dict[str, int | str | None]
"""One `show stat` line: numbers as int, text as str, empty fields as None."""

TEXT_COLUMNS = frozenset(
    {
        "pxname", "svname", "status", "tracked", "check_status", "last_chk", "last_agt",
        "agent_status", "check_desc", "agent_desc", "addr", "cookie", "mode", "algo",
        "agg_server_status", "agg_server_check_status", "agg_check_status",
    }
)  # fmt: skip
"""`show stat` columns that stay text; every other non-empty field is a number."""

# srv_admin_state bits (HAProxy include/haproxy/server-t.h, enum srv_admin).
ADMF_FMAINT = 0x01
"""Maintenance forced by the CLI (`set server ... state maint`)."""
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
"""Maintenance from the config (`disabled`)."""
ADMF_FDRAIN = 0x08
"""Drain forced by the CLI (`set server ... state drain`)."""
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_HMAINT = 0x40
# srv_check_state bits (include/haproxy/check-t.h).
CHK_ST_CONFIGURED = 0x02
CHK_ST_ENABLED = 0x04
# srv_op_state (enum srv_state).
OP_STOPPED, OP_STARTING, OP_RUNNING, OP_STOPPING = 0, 1, 2, 3

_SERVERS_STATE_VERSION = "1"


def parse_stat_csv(text: str) -> list[Row]:
    """`show stat` -> one dict per line, keyed by the header's column names.

    Raises:
        RemoteProtocolError: the text is not `show stat` CSV (e.g. an error message).
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname,"):
        raise RemoteProtocolError(f"not show stat output: {text[:200]!r}")
    header = lines[0][2:].split(",")
    rows: list[Row] = []
    try:
        for fields in csv.reader(line for line in lines[1:] if line.strip()):
            row: Row = {}
            for name, value in zip(header, fields, strict=False):
                if name and name != "-":
                    row[name] = _typed(name, value)
            rows.append(row)
    except csv.Error as e:
        raise RemoteProtocolError(f"bad show stat CSV: {e}") from e
    return rows


def _typed(name: str, value: str) -> int | str | None:
    if value == "":
        return None
    if name in TEXT_COLUMNS:
        return value
    try:
        return int(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class ServerState:
    """One line of `show servers state` (the fields zonegate reads)."""

    backend: str
    server: str
    addr: str
    op_state: int
    admin_bits: int
    weight: int
    """srv_uweight: the weight set by config or `set server ... weight`."""
    initial_weight: int
    check_state: int
    port: int

    @property
    def admin(self) -> ServerAdmin:
        """The admin state as `set server ... state` sets it (its forced bits)."""
        if self.admin_bits & (ADMF_FMAINT | ADMF_CMAINT):
            return ServerAdmin.MAINT
        if self.admin_bits & ADMF_FDRAIN:
            return ServerAdmin.DRAIN
        return ServerAdmin.READY

    @property
    def up(self) -> bool:
        return self.op_state != OP_STOPPED

    @property
    def check_configured(self) -> bool:
        return bool(self.check_state & CHK_ST_CONFIGURED)

    @property
    def check_enabled(self) -> bool:
        return bool(self.check_state & CHK_ST_ENABLED)

    def reported(self) -> ServerReported:
        return ServerReported(
            admin=self.admin,
            weight=self.weight,
            up=self.up,
            check_enabled=self.check_enabled,
            check_configured=self.check_configured,
        )


def parse_servers_state(text: str) -> list[ServerState]:
    """`show servers state` (format version 1) -> one `ServerState` per server.

    Raises:
        RemoteProtocolError: another format version, a missing column or a bad number.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != _SERVERS_STATE_VERSION:
        raise RemoteProtocolError(f"not show servers state output (v1): {text[:200]!r}")
    if len(lines) < 2 or not lines[1].startswith("# "):
        raise RemoteProtocolError(f"show servers state without a header: {text[:200]!r}")
    header = lines[1][2:].split()
    need = ("be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state",
            "srv_uweight", "srv_iweight", "srv_check_state", "srv_port")  # fmt: skip
    missing = [n for n in need if n not in header]
    if missing:
        raise RemoteProtocolError(f"show servers state lacks {missing}")
    col = {n: header.index(n) for n in need}
    out = []
    for line in lines[2:]:
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        if len(fields) < len(header):
            raise RemoteProtocolError(f"short show servers state line: {line!r}")
        try:
            out.append(
                ServerState(
                    backend=fields[col["be_name"]],
                    server=fields[col["srv_name"]],
                    addr=fields[col["srv_addr"]],
                    op_state=int(fields[col["srv_op_state"]]),
                    admin_bits=int(fields[col["srv_admin_state"]]),
                    weight=int(fields[col["srv_uweight"]]),
                    initial_weight=int(fields[col["srv_iweight"]]),
                    check_state=int(fields[col["srv_check_state"]]),
                    port=int(fields[col["srv_port"]]),
                )
            )
        except ValueError as e:
            raise RemoteProtocolError(f"bad number in show servers state: {line!r}") from e
    return out


def reported_state(text: str) -> ReportedState:
    """`show servers state` -> what reconcile compares the desired state with."""
    return {ServerKey(s.backend, s.server): s.reported() for s in parse_servers_state(text)}


def parse_info(text: str) -> dict[str, str]:
    """`show info` -> {"Name": "HAProxy", "Version": "2.6.12", "Pid": "123", ...}.

    Raises:
        RemoteProtocolError: the text is not `show info` output.
    """
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    if "Pid" not in info:
        raise RemoteProtocolError(f"not show info output: {text[:200]!r}")
    return info


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """One process of the master's `show proc`."""

    pid: int
    kind: str
    """"master", "worker" (current) or "old" (a worker of an earlier config, finishing)."""
    reloads: int
    failed_reloads: int
    """The master's failed reloads since its last successful one (0 for workers)."""
    uptime: str
    version: str


@dataclass(frozen=True, slots=True)
class ProcTable:
    """The master's `show proc`: the master, its current workers, the old ones."""

    master: ProcEntry
    workers: tuple[ProcEntry, ...]
    old_workers: tuple[ProcEntry, ...]


_PROC_LINE = re.compile(
    r"^(?P<pid>\d+)\s+(?P<type>\S+)\s+(?P<reloads>\d+)(?:\s+\[failed:\s*(?P<failed>\d+)\])?"
    r"\s+(?P<uptime>\S+)\s+(?P<version>\S+)"
)


def parse_proc(text: str) -> ProcTable:
    """The master CLI's `show proc` -> `ProcTable`.

    Raises:
        RemoteProtocolError: no master line, or not `show proc` output.
    """
    section = "master"
    master: ProcEntry | None = None
    workers: list[ProcEntry] = []
    old: list[ProcEntry] = []
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("# ").strip()
            if title == "workers":
                section = "worker"
            elif title == "old workers":
                section = "old"
            elif not title.startswith("<PID>"):
                section = "other"  # programs
            continue
        m = _PROC_LINE.match(line)
        if m is None or section == "other":
            continue
        entry = ProcEntry(
            pid=int(m["pid"]),
            kind="master" if m["type"] == "master" else section,
            reloads=int(m["reloads"]),
            failed_reloads=int(m["failed"] or 0),
            uptime=m["uptime"],
            version=m["version"],
        )
        if entry.kind == "master":
            master = entry
        elif entry.kind == "old":
            old.append(entry)
        else:
            workers.append(entry)
    if master is None:
        raise RemoteProtocolError(f"not show proc output: {text[:200]!r}")
    return ProcTable(master, tuple(workers), tuple(old))
