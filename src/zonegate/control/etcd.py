"""The etcd store: versions in an etcd v3 cluster, so the control plane survives a zone.

Talks to etcd's JSON gRPC gateway (etcd 3.4: `/v3/kv/range`, `/v3/kv/txn`,
`/v3/watch`; keys and values base64) with one `httpx.AsyncClient`; no etcd client
library. Layout under `prefix` (default `/zonegate/`)::

    PREFIX versions/00000000000000000007   {"state": {...}, "audit": {...}}
    PREFIX latest                          "7"

Keys are zero-padded to 20 digits so key order is version order (`history` and
`latest` are one range read each). Reads are linearizable (etcd's default): a read
never returns less than an append acknowledged before it started, by any instance.

Append is one etcd transaction: if `latest` == expected_version (or, for version 1,
`latest` does not exist) then put `versions/N` and `latest` = N, else read `latest`
back and raise `VersionConflict`. etcd acknowledges a transaction once a quorum has
it in its log on disk, so an acknowledged version survives losing any minority of
members. The history is append-only by convention (nothing here deletes or rewrites
a key; etcd itself does not enforce it).

Failover: requests go to the endpoint that answered last; on a connection error,
an "unavailable" answer (no leader, leader changed) or no answer within the attempt
timeout, the next endpoint is tried, round after round, until `timeout` seconds have
passed, then `StoreUnavailable`. The attempt timeout (`attempt_timeout`, 0.25 s) is
short because a member that lost its leader holds a write without answering (it
forwarded the proposal to the dead leader) for etcd's own request timeout, about
5 s: one attempt must not spend the whole deadline there while another member, or
the same one after the election, would answer. It doubles after a round in which
every member took the request and none answered in time, so a cluster that is
merely slow still gets the time it needs (a round with a member that refused the
connection or answered "unavailable" is an election, not a slow cluster).

A retried append whose earlier attempt may have been applied (its answer was lost
or never came) is recognised: if the conflict shows our own bytes at version N, the
append succeeded. The transaction compares `latest` first, so of several attempts
of one append at most one is ever applied.

Long-poll: while anyone waits in `wait_for`, one watcher task per store streams
`/v3/watch` on the `latest` key from the revision it last read, and wakes every
waiter on each new version (a write through another instance wakes waiters here in
milliseconds). When a watch stream breaks (its member died) the watcher re-reads
`latest` and watches again through the next endpoint; and every `poll_interval`
seconds each waiter also reads `latest` itself, as a fallback should a stream hang
silently.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from zonegate.control.model import AuditEntry, DesiredState
from zonegate.control.store import VersionSignal, check_append, check_history_args
from zonegate.errors import StoreUnavailable, VersionConflict

DEFAULT_PREFIX = "/zonegate/"

_RETRY_CODES = {1, 4, 10, 14}
"""gRPC codes worth another endpoint: cancelled, deadline exceeded, aborted,
unavailable (no leader, leader changed, request timed out)."""

_AMBIGUOUS_CODES = {1, 4, 14}
"""gRPC codes after which a write may or may not have been applied."""


class _Record(BaseModel):
    """The value of one `versions/N` key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: DesiredState
    audit: AuditEntry


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with `key` (etcd range_end)."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def normalize_endpoint(endpoint: str) -> str:
    """`host:port` or `http://host:port[/]` → `http://host:port`."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise ValueError("empty etcd endpoint")
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    return endpoint


class _Retry(Exception):
    """One endpoint failed in a way another endpoint may not (internal)."""

    def __init__(self, message: str, *, ambiguous: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
        self.timed_out = timed_out
        """The member took the request and did not answer within the attempt timeout."""


class EtcdStore(VersionSignal):
    """A `Store` in an etcd v3 cluster (see the module docstring).

    Args:
        endpoints: Client URLs of the members (`http://host:port` or `host:port`).
        prefix: Key prefix of this control plane's data.
        timeout: Seconds one operation may take at most, across every endpoint and
            retry, before `StoreUnavailable`.
        attempt_timeout: Seconds one attempt on one member may take in the first
            round before the next member is tried (doubled after each round in
            which every member timed out; never beyond what is left of `timeout`).
        poll_interval: Seconds between fallback reads of `latest` while waiting in
            `wait_for` (the watch normally wakes waiters much sooner).
    """

    def __init__(
        self,
        endpoints: list[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 2.0,
        attempt_timeout: float = 0.25,
        poll_interval: float = 1.0,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        if not 0 < attempt_timeout <= timeout:
            raise ValueError("EtcdStore needs 0 < attempt_timeout <= timeout")
        if not prefix:
            raise ValueError("EtcdStore needs a non-empty key prefix")
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.prefix = prefix
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.poll_interval = poll_interval
        self._latest_key = f"{prefix}latest".encode()
        self._versions = f"{prefix}versions/".encode()
        self._client = httpx.AsyncClient(timeout=timeout)
        self._current = 0
        """Index of the endpoint that answered last (tried first)."""
        self._watcher: asyncio.Task[None] | None = None
        super().__init__()

    def __repr__(self) -> str:
        return f"EtcdStore({self.endpoints!r}, prefix={self.prefix!r})"

    # --- Store -----------------------------------------------------------------------

    async def latest(self) -> DesiredState | None:
        """The newest state, or None if the store is empty."""
        kvs = await self._range(self._versions, _prefix_end(self._versions), 1, descend=True)
        if not kvs:
            return None
        record = _Record.model_validate_json(_unb64(kvs[0]["value"]))
        await self._observe(record.state.version)
        return record.state

    async def append(
        self, state: DesiredState, audit: AuditEntry, *, expected_version: int
    ) -> None:
        """Store version `expected_version + 1` (see `Store.append`)."""
        check_append(state, audit, expected_version)
        value = f'{{"state":{state.model_dump_json()},"audit":{audit.model_dump_json()}}}'
        key = self._version_key(state.version)
        if expected_version == 0:
            compare = {"key": _b64(self._latest_key), "result": "EQUAL", "target": "CREATE",
                       "create_revision": "0"}  # fmt: skip
        else:
            compare = {"key": _b64(self._latest_key), "result": "EQUAL", "target": "VALUE",
                       "value": _b64(str(expected_version))}  # fmt: skip
        body = {
            "compare": [compare],
            "success": [
                {"request_put": {"key": _b64(key), "value": _b64(value)}},
                {"request_put": {"key": _b64(self._latest_key), "value": _b64(str(state.version))}},
            ],
            "failure": [
                {"request_range": {"key": _b64(self._latest_key)}},
                {"request_range": {"key": _b64(key)}},
            ],
        }
        answer, ambiguous = await self._call("/v3/kv/txn", body)
        if not answer.get("succeeded", False):
            responses = answer.get("responses", [])
            latest_kvs = responses[0].get("response_range", {}).get("kvs", []) if responses else []
            mine_kvs = (
                responses[1].get("response_range", {}).get("kvs", []) if len(responses) > 1 else []
            )
            if ambiguous and mine_kvs and _unb64(mine_kvs[0]["value"]) == value.encode():
                pass  # an earlier attempt of this very append was applied; its answer lost
            else:
                latest = int(_unb64(latest_kvs[0]["value"])) if latest_kvs else None
                raise VersionConflict(expected_version, latest)
        await self._observe(state.version)

    async def get(self, version: int) -> DesiredState | None:
        """The state of one version, or None."""
        if version < 1:
            self._check_open()
            return None
        kvs = await self._range(self._version_key(version))
        if not kvs:
            return None
        return _Record.model_validate_json(_unb64(kvs[0]["value"])).state

    async def history(self, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit entries of versions > since, oldest first, at most `limit`."""
        check_history_args(since, limit)
        kvs = await self._range(self._version_key(since + 1), _prefix_end(self._versions), limit)
        return [_Record.model_validate_json(_unb64(kv["value"])).audit for kv in kvs]

    async def wait_for(
        self,
        after_version: int,
        timeout: float,  # noqa: ASYNC109 (a long-poll answers None at its timeout)
    ) -> DesiredState | None:
        """The newest state once a version > after_version exists, or None after
        `timeout` seconds (see `Store.wait_for`)."""
        version, _ = await self._read_latest()
        await self._observe(version)
        if self._known <= after_version:
            self._waiters += 1
            try:
                self._ensure_watcher()
                async with asyncio.timeout(max(0.0, timeout)):
                    while self._known <= after_version and not self._closed:
                        try:
                            async with asyncio.timeout(self.poll_interval), self._changed:
                                await self._changed.wait_for(
                                    lambda: self._known > after_version or self._closed
                                )
                        except TimeoutError:
                            await self._poll_once()
            except TimeoutError:
                return None
            finally:
                self._waiters -= 1
                if self._waiters == 0 and self._watcher is not None:
                    self._watcher.cancel()
        return await self.latest()

    async def close(self) -> None:
        """Close the HTTP client; later calls raise StoreUnavailable."""
        if not await self._mark_closed():
            return
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])  # not `await`: its CancelledError is not ours
        await self._client.aclose()

    # --- internals -------------------------------------------------------------------

    def _version_key(self, version: int) -> bytes:
        return self._versions + f"{version:020d}".encode()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"etcd store {self.prefix} is closed")

    async def _range(
        self, key: bytes, range_end: bytes | None = None, limit: int = 0, *, descend: bool = False
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if limit:
            body["limit"] = str(limit)
        if descend:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "KEY"
        answer, _ = await self._call("/v3/kv/range", body)
        return list(answer.get("kvs", []))

    async def _read_latest(self) -> tuple[int, int]:
        """(the `latest` version or 0, the etcd revision of the read)."""
        answer, _ = await self._call("/v3/kv/range", {"key": _b64(self._latest_key)})
        kvs = answer.get("kvs", [])
        version = int(_unb64(kvs[0]["value"])) if kvs else 0
        return version, int(answer.get("header", {}).get("revision", 0))

    async def _call(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """POST to the first endpoint that answers within the attempt timeout; retry
        the others, round after round, until `timeout` (see the module docstring).

        Returns:
            The JSON answer, and whether an earlier attempt may have been applied.
        """
        self._check_open()
        deadline = time.monotonic() + self.timeout
        errors: list[str] = []
        ambiguous = False
        backoff = 0.02
        attempt = self.attempt_timeout
        while True:
            slow = True  # every member of this round took the request, none answered
            for _ in range(len(self.endpoints)):
                endpoint = self.endpoints[self._current]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    answer = await self._post(endpoint, path, body, min(attempt, remaining))
                    return answer, ambiguous
                except _Retry as exc:
                    ambiguous = ambiguous or exc.ambiguous
                    slow = slow and exc.timed_out
                    errors.append(f"{endpoint}: {exc}")
                    self._current = (self._current + 1) % len(self.endpoints)
                self._check_open()
            if time.monotonic() + backoff >= deadline:
                tried = "; ".join(errors[-len(self.endpoints) :])
                raise StoreUnavailable(
                    f"etcd store: no endpoint answered within {self.timeout:g} s ({tried})"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.2)
            if slow:
                attempt *= 2

    async def _post(
        self, endpoint: str, path: str, body: dict[str, Any], budget: float
    ) -> dict[str, Any]:
        try:
            resp = await self._client.post(endpoint + path, json=body, timeout=budget)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retry(f"cannot connect: {exc!r}", ambiguous=False) from exc
        except httpx.TimeoutException as exc:  # sent, maybe applied, no answer in time
            raise _Retry(
                f"no answer within {budget:.2g} s", ambiguous=True, timed_out=True
            ) from exc
        except httpx.TransportError as exc:  # sent, maybe applied, no answer
            raise _Retry(f"no answer: {exc!r}", ambiguous=True) from exc
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if resp.status_code == 200 and isinstance(answer, dict):
            return answer
        code = answer.get("code") if isinstance(answer, dict) else None
        message = (
            answer.get("message") or answer.get("error")
            if isinstance(answer, dict)
            else resp.text[:200]
        )
        if code in _RETRY_CODES or resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}: {message}", ambiguous=code in _AMBIGUOUS_CODES)
        raise StoreUnavailable(f"etcd store: {endpoint}{path}: HTTP {resp.status_code}: {message}")

    async def _poll_once(self) -> None:
        try:
            version, _ = await self._read_latest()
        except StoreUnavailable:
            return  # closed (the waiter ends), or no member answers: try again later
        await self._observe(version)

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done() or self._watcher.cancelling():
            self._watcher = asyncio.create_task(self._watch(), name=f"etcd-watch {self.prefix}")

    async def _watch(self) -> None:
        """Follow `latest` through the watch API while anyone waits (see the module
        docstring); on any failure re-read and watch through the next endpoint."""
        while self._waiters > 0 and not self._closed:
            try:
                version, revision = await self._read_latest()
                await self._observe(version)
                await self._stream(self.endpoints[self._current], revision + 1)
            except (StoreUnavailable, httpx.HTTPError, ValueError, KeyError):
                self._current = (self._current + 1) % len(self.endpoints)
            if self._waiters > 0 and not self._closed:
                await asyncio.sleep(min(self.poll_interval, 0.1))

    async def _stream(self, endpoint: str, start_revision: int) -> None:
        body = {
            "create_request": {
                "key": _b64(self._latest_key),
                "start_revision": str(start_revision),
            }
        }
        timeout = httpx.Timeout(self.timeout, read=None)
        async with self._client.stream(
            "POST", f"{endpoint}/v3/watch", json=body, timeout=timeout
        ) as resp:
            if resp.status_code != 200:
                raise StoreUnavailable(f"etcd watch {endpoint}: HTTP {resp.status_code}")
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                result = message.get("result")
                if result is None:
                    raise StoreUnavailable(f"etcd watch {endpoint}: {line[:200]}")
                if result.get("canceled") or result.get("compact_revision"):
                    raise StoreUnavailable(f"etcd watch {endpoint} ended: {line[:200]}")
                for event in result.get("events", []):
                    if event.get("type", "PUT") == "PUT":
                        await self._observe(int(_unb64(event["kv"]["value"])))


def parse_etcd_url(url: str) -> tuple[list[str], str]:
    """`etcd://host:port,host:port[/prefix/]` → (endpoints, prefix).

    The prefix defaults to `/zonegate/`; a given one gets a trailing `/`.

    Raises:
        ValueError: No endpoint, or an endpoint that is not `host:port`.
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "etcd" or not sep:
        raise ValueError(f"not an etcd:// URL: {url!r}")
    hosts, slash, path = rest.partition("/")
    prefix = DEFAULT_PREFIX
    if slash and path.strip("/"):
        prefix = "/" + path.strip("/") + "/"
    endpoints = [h.strip() for h in hosts.split(",") if h.strip()]
    if not endpoints:
        raise ValueError(f"store URL {url!r}: no etcd endpoint (etcd://host:port,host:port)")
    for e in endpoints:
        host, colon, port = e.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"store URL {url!r}: etcd endpoint {e!r} is not host:port")
    return [f"http://{e}" for e in endpoints], prefix


__all__ = ["DEFAULT_PREFIX", "EtcdStore", "normalize_endpoint", "parse_etcd_url"]
