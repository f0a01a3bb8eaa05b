"""The zonegate exception tree.

```
ZonegateError
├── ConfigError              one problem in a topology file (file, line, col, path, msg)
│   └── ConfigErrors         many problems, reported together
├── ProtocolError            abstract; .hint is the HTTP status (or DNS rcode) to answer with
│   ├── LocalProtocolError   we misused a protocol object (a bug or API misuse)
│   └── RemoteProtocolError  the peer sent something we refuse
│       └── HttpParseError   a malformed or dangerous HTTP message
├── TransportError           raised only by shells
│   ├── TimeoutException → ConnectTimeout / ReadTimeout
│   └── NetworkError → ConnectError / ReadError
├── StoreError               the control plane's store failed
│   ├── VersionConflict      an append raced another writer (stale expected version)
│   └── StoreUnavailable     the store cannot be reached
└── ClientError              the client SDK failed (zonegate.client._exceptions)
    ├── ConfigUnavailable    no split config: no control plane, no cache, no seed
    └── ResolveError         a zone domain has no address (also an httpx.ConnectError)
```

Expected bad outcomes (no healthy backend, a dropped packet) are return values, not
exceptions. Pure code raises only ProtocolError subclasses (bad input) or ValueError
(misuse). The docstring of each class is its default message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("zonegate")


class ZonegateError(Exception):
    """zonegate failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in a topology file; `str()` is `file:line:col: path: msg`."""

    file: str
    line: int | None
    col: int | None
    path: str
    msg: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.path}: {self.msg}" if self.path else f"{where}: {self.msg}"


class ConfigError(ZonegateError):
    """The topology file is invalid."""

    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class ConfigErrors(ZonegateError):
    """The topology file has several problems; `problems` lists them in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.col or 0, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class ProtocolError(ZonegateError):
    """A protocol was violated."""

    hint: int = 400

    def __init__(self, message: str | None = None, *, hint: int | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""

    hint = 500


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class HttpParseError(RemoteProtocolError):
    """Malformed HTTP message."""


class TransportError(ZonegateError):
    """A network operation failed."""


class TimeoutException(TransportError):
    """A network operation timed out."""


class ConnectTimeout(TimeoutException):
    """Connecting timed out."""


class ReadTimeout(TimeoutException):
    """Reading timed out."""


class NetworkError(TransportError):
    """A network operation failed."""


class ConnectError(NetworkError):
    """Connecting failed."""


class ReadError(NetworkError):
    """Reading failed."""


BUGS_SEEN = 0


def bug(message: str, exc: BaseException | None = None) -> None:
    """Report an internal error at a boundary: raise under pytest, else log and count.

    One bad connection must never stop a server, but tests must see every bug.
    """
    global BUGS_SEEN
    BUGS_SEEN += 1
    if "PYTEST_CURRENT_TEST" in os.environ and os.environ.get("ZONEGATE_BUG_RAISE", "1") == "1":
        raise AssertionError(message) from exc
    log.error("internal error: %s", message, exc_info=exc)


class StoreError(ZonegateError):
    """The control plane's store failed."""


class VersionConflict(StoreError):
    """Another writer stored a newer version first; re-read the latest and retry.

    `expected` is the version the writer built on, `latest` the one actually stored
    (None when the store is empty).
    """

    def __init__(self, expected: int, latest: int | None) -> None:
        super().__init__(
            f"version conflict: the change was made from version {expected}, "
            f"but the latest version is {latest if latest is not None else 'none'}"
        )
        self.expected = expected
        self.latest = latest


class StoreUnavailable(StoreError):
    """The store cannot be read or written (closed, locked too long, I/O error)."""
