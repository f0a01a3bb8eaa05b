"""A small async client of HAProxy's Runtime API and master CLI (shell).

One command per connection (HAProxy answers and closes), or several over one
connection in prompt mode (`batch`). Every command that changes state is sent after
`set severity-output number`, so HAProxy's refusals carry a syslog level ("[3]: No
such server.") and are told apart from data. Errors map into zonegate's tree:

- socket missing or refused: `ConnectError`; no connection in time: `ConnectTimeout`;
- no (complete) answer in time: `ReadTimeout`; connection reset: `ReadError`;
- HAProxy refused the command: `RuntimeCommandError` (its words in `.message`);
- an answer that is not what the command prints: `RemoteProtocolError` (parse.py).

    rt = RuntimeClient("/run/zonegate/lb/haproxy.sock")
    rows = await rt.show_stat()
    await rt.set_server_state("be_web", "b1", ServerAdmin.DRAIN)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

from zonegate.errors import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    ZonegateError,
)
from zonegate.lb.haproxy.model import WEIGHT_MAX, ReportedState, ServerAdmin
from zonegate.lb.haproxy.parse import (
    ProcTable,
    Row,
    ServerState,
    parse_info,
    parse_proc,
    parse_servers_state,
    parse_stat_csv,
    reported_state,
)

DEFAULT_TIMEOUT = 2.0
"""Seconds for one command: connect, send, and read the whole answer."""

_SEVERITY = re.compile(r"^\[(\d)\]: ", re.MULTILINE)
_LOG_ERR = 3  # syslog levels 0..3 (emerg, alert, crit, err) are refusals
_TOKEN = re.compile(r"[^\s;\\]+")
"""A command argument HAProxy's CLI reads as one word (no space, `;` or backslash)."""
_PROMPT = b"\n> "
_MASTER_PROMPT = re.compile(r"^master(?:\[[^\]]*\])?> ")
_MASTER_TAIL = re.compile(r"(?<=\n)master(?:\[[^\]]*\])?> $")
_MASTER_ANSWER = re.compile(rb"^master(?:\[[^\]]*\])?> (?s:.*)\nmaster(?:\[[^\]]*\])?> $")
"""The master's answer in prompt mode: a prompt, the output, the next prompt."""


class RuntimeCommandError(ZonegateError):
    """HAProxy refused a Runtime API command."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"haproxy refused {command!r}: {message}")
        self.command = command
        self.message = message


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One command of a `batch`: its text, whether HAProxy took it, what it said."""

    command: str
    ok: bool
    output: str


def _check_command(cmd: str) -> None:
    if "\n" in cmd or "\r" in cmd or ";" in cmd:
        raise ValueError(f"one Runtime API command per call, without ';' or newlines: {cmd!r}")


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} cannot be one word of a Runtime API command")
    return value


def _verdict(cmd: str, text: str) -> str:
    """The answer to one command sent after `set severity-output number`."""
    m = _SEVERITY.search(text)
    if m is not None and int(m.group(1)) <= _LOG_ERR:
        raise RuntimeCommandError(cmd, _SEVERITY.sub("", text).strip())
    plain = _SEVERITY.sub("", text).lstrip()
    if plain.startswith("Unknown command"):  # printed as help, whatever the severity
        raise RuntimeCommandError(cmd, plain.split("\n", 1)[0].strip())
    return text


async def _connect(path: str, limit: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the unix socket `path` within `limit` seconds, errors in our tree."""
    try:
        async with asyncio.timeout(limit):
            return await asyncio.open_unix_connection(path)
    except TimeoutError as e:
        raise ConnectTimeout(f"haproxy socket {path}: no connection in {limit}s") from e
    except OSError as e:
        raise ConnectError(f"haproxy socket {path}: {e.strerror or e}") from e


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def _exchange(
    path: str, payload: bytes, limit: float, until: re.Pattern[bytes] | None
) -> bytes:
    """Connect to the unix socket `path`, send `payload`, read to EOF (or until the
    regex `until` matches the end of what came); `limit` seconds for the connect and
    again for the answer."""
    timeout = limit
    reader, writer = await _connect(path, timeout)
    try:
        async with asyncio.timeout(timeout):
            writer.write(payload)
            await writer.drain()
            if until is None:
                return await reader.read()
            data = b""
            while not until.search(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
            return data
    except TimeoutError as e:
        raise ReadTimeout(f"haproxy socket {path}: no complete answer in {timeout}s") from e
    except OSError as e:
        raise ReadError(f"haproxy socket {path}: {e.strerror or e}") from e
    finally:
        await _close(writer)


class RuntimeClient:
    """HAProxy's Runtime API on its stats socket (`level admin` for the changes)."""

    def __init__(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, cmd: str) -> str:
        """Send one command and return HAProxy's raw answer (nothing is checked)."""
        _check_command(cmd)
        data = await _exchange(self.path, cmd.encode() + b"\n", self.timeout, None)
        return data.decode("utf-8", "replace")

    async def execute(self, cmd: str) -> str:
        """Send one command; return its output, or raise `RuntimeCommandError`."""
        _check_command(cmd)
        payload = f"set severity-output number; {cmd}\n".encode()
        data = await _exchange(self.path, payload, self.timeout, None)
        # The first line answers `set severity-output`.
        text = data.decode("utf-8", "replace").removeprefix("\n")
        return _verdict(cmd, text)

    async def batch(self, cmds: Sequence[str]) -> list[CommandResult]:
        """Send several commands over one connection (prompt mode), in order.

        A refused command does not stop the others; each result says how it went.
        """
        for cmd in cmds:
            _check_command(cmd)
        results = []
        reader, writer = await _connect(self.path, self.timeout)
        try:
            async with asyncio.timeout(self.timeout * (1 + len(cmds))):
                writer.write(b"prompt\n")
                await reader.readuntil(_PROMPT)
                writer.write(b"set severity-output number\n")
                await reader.readuntil(_PROMPT)
                for cmd in cmds:
                    writer.write(cmd.encode() + b"\n")
                    raw = await reader.readuntil(_PROMPT)
                    text = raw[: -len(_PROMPT)].decode("utf-8", "replace") + "\n"
                    try:
                        results.append(CommandResult(cmd, True, _verdict(cmd, text)))
                    except RuntimeCommandError as e:
                        results.append(CommandResult(cmd, False, e.message))
                writer.write(b"quit\n")
        except TimeoutError as e:
            raise ReadTimeout(f"haproxy socket {self.path}: batch timed out") from e
        except (asyncio.IncompleteReadError, OSError) as e:
            raise ReadError(f"haproxy socket {self.path}: connection lost: {e}") from e
        finally:
            await _close(writer)
        return results

    # reading

    async def show_info(self) -> dict[str, str]:
        """`show info`: Name, Version, Pid, Uptime_sec, CurrConns, ..."""
        return parse_info(await self.execute("show info"))

    async def show_stat(self) -> list[Row]:
        """`show stat`: one typed row per frontend, backend and server."""
        return parse_stat_csv(await self.execute("show stat"))

    async def show_servers_state(self, backend: str | None = None) -> list[ServerState]:
        """`show servers state [backend]`, parsed."""
        cmd = "show servers state" + (f" {_token(backend)}" if backend else "")
        return parse_servers_state(await self.execute(cmd))

    async def servers_state(self) -> ReportedState:
        """Every server's state as reconcile reads it."""
        return reported_state(await self.execute("show servers state"))

    async def show_map(self, map_file: str) -> dict[str, str]:
        """`show map <file>` -> {key: value}."""
        text = await self.execute(f"show map {_token(map_file)}")
        out = {}
        for line in text.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                out[parts[1]] = parts[2]
        return out

    # changing

    async def set_server_state(self, backend: str, server: str, admin: ServerAdmin) -> None:
        """`set server <b>/<s> state ready|drain|maint`."""
        await self.execute(f"set server {_token(backend)}/{_token(server)} state {admin.value}")

    async def set_server_weight(self, backend: str, server: str, weight: int) -> None:
        """`set server <b>/<s> weight <0..256>`."""
        if not 0 <= weight <= WEIGHT_MAX:
            raise ValueError(f"weight {weight} not in 0..{WEIGHT_MAX}")
        await self.execute(f"set server {_token(backend)}/{_token(server)} weight {weight}")

    async def set_server_health(self, backend: str, server: str, health: str) -> None:
        """`set server <b>/<s> health up|stopping|down`."""
        if health not in ("up", "stopping", "down"):
            raise ValueError(f"health {health!r}: up, stopping or down")
        await self.execute(f"set server {_token(backend)}/{_token(server)} health {health}")

    async def enable_health(self, backend: str, server: str) -> None:
        """`enable health <b>/<s>`: active checks run again."""
        await self.execute(f"enable health {_token(backend)}/{_token(server)}")

    async def disable_health(self, backend: str, server: str) -> None:
        """`disable health <b>/<s>`: active checks stop; the state stays as it is."""
        await self.execute(f"disable health {_token(backend)}/{_token(server)}")

    async def set_map(self, map_file: str, key: str, value: str) -> None:
        """`set map <file> <key> <value>` (the key must exist)."""
        await self.execute(f"set map {_token(map_file)} {_token(key)} {_token(value)}")

    async def add_map(self, map_file: str, key: str, value: str) -> None:
        """`add map <file> <key> <value>`."""
        await self.execute(f"add map {_token(map_file)} {_token(key)} {_token(value)}")

    async def del_map(self, map_file: str, key: str) -> None:
        """`del map <file> <key>`."""
        await self.execute(f"del map {_token(map_file)} {_token(key)}")


class MasterClient:
    """HAProxy's master CLI (`-S <socket>`): processes and reloads."""

    def __init__(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, cmd: str) -> str:
        """Send one master CLI command and return its raw answer.

        The master keeps a one-shot connection open after answering, so the command
        goes in prompt mode and the answer ends at the next prompt (or at EOF).
        """
        _check_command(cmd)
        payload = b"prompt\n" + cmd.encode() + b"\n"
        data = await _exchange(self.path, payload, self.timeout, _MASTER_ANSWER)
        text = data.decode("utf-8", "replace")
        # Drop the prompt answering `prompt` and the one closing the answer; the
        # prompt reads "master[ReloadFailed]> " after a failed reload.
        return _MASTER_PROMPT.sub("", text, count=1).removesuffix(
            m.group(0) if (m := _MASTER_TAIL.search(text)) else ""
        )

    async def show_proc(self) -> ProcTable:
        """`show proc`: the master, its current workers and the old ones."""
        return parse_proc(await self.command("show proc"))

    async def reload(self) -> None:
        """Ask the master to reload (HAProxy 2.6 answers nothing and closes).

        The outcome shows in `show proc` once the master is back: see
        process.py's `HaproxyProcess.reload`, which waits for it.
        """
        _, writer = await _connect(self.path, self.timeout)
        try:
            writer.write(b"reload\n")
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except (TimeoutError, OSError) as e:
            raise ReadError(f"haproxy master socket {self.path}: reload not sent: {e}") from e
        finally:
            await _close(writer)
