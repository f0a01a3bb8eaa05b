"""`zonegate control`: the control plane process (store + HTTP API on uvicorn).

Startup: load the topology (exit 1 on errors), read the token file (exit 1), open
the store (exit 2 for a URL it cannot use), write version 1 from the topology if the
store is empty, then serve the API until SIGTERM or SIGINT (uvicorn stops accepting,
finishes the requests in flight, then the store is closed). Once listening it prints
one line on stdout::

    zonegate control ready: http://127.0.0.1:9900 version 3 store sqlite:///var/lib/zonegate/control.db

Store URLs: `sqlite:///abs/path.db` or `sqlite://relative/path.db` (everything after
`sqlite://` is the file path), `memory://` (lost at exit; demos and tests),
`etcd://host:port,host:port[/prefix/]` (an etcd v3 cluster, keys under `prefix`,
default `/zonegate/`; see `control.etcd`). Default: `sqlite://DATA_DIR/control.db`.

Also runnable as `python -m zonegate.control.server FILE [--store URL] [--listen
HOST:PORT] [--data-dir DIR] [--tokens FILE]` (tests use it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

from zonegate.control import service
from zonegate.control.api import TokenTable, create_app, load_tokens
from zonegate.control.fleet_poll import FleetPoller
from zonegate.control.store import MemoryStore, Store
from zonegate.errors import ConfigErrors, StoreError, VersionConflict
from zonegate.topology.load import load_topology
from zonegate.topology.schema import Topology
from zonegate.topology.types import parse_hostport

log = logging.getLogger("zonegate.control")

DEFAULT_LISTEN = "127.0.0.1:9900"
DEFAULT_DATA_DIR = "."
DB_NAME = "control.db"


class StoreUrlError(ValueError):
    """A store URL this build cannot open."""


def open_store(url: str | None, data_dir: str) -> tuple[Store, str]:
    """Open the store a URL names (see the module docstring).

    Returns:
        The store and its URL as resolved (for the ready line).

    Raises:
        StoreUrlError: An unknown scheme, an empty path, or an `etcd://` URL
            without `host:port` endpoints.
    """
    from zonegate.control.sqlite import SQLiteStore

    if url is None:
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, DB_NAME)
        return SQLiteStore(path), f"sqlite://{os.path.abspath(path)}"
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreUrlError(f"store URL {url!r}: expected sqlite:///PATH, memory:// or etcd://")
    if scheme == "sqlite":
        if not rest:
            raise StoreUrlError(f"store URL {url!r}: no file path after sqlite://")
        parent = os.path.dirname(rest)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return SQLiteStore(rest), url
    if scheme == "memory":
        return MemoryStore(), url
    if scheme == "etcd":
        from zonegate.control.etcd import EtcdStore, parse_etcd_url

        try:
            endpoints, prefix = parse_etcd_url(url)
        except ValueError as exc:
            raise StoreUrlError(str(exc)) from None
        return EtcdStore(endpoints, prefix=prefix), url
    raise StoreUrlError(f"store URL {url!r}: unknown scheme {scheme!r} (sqlite, memory, etcd)")


async def ensure_initial(store: Store, topo: Topology, source: str) -> int:
    """Write version 1 from the topology when the store is empty; return the latest
    version. Another process writing version 1 first is fine."""
    latest = await store.latest()
    if latest is not None:
        problems = service.state_problems(latest, topo)
        for p in problems:
            log.warning("version %d does not fit %s: %s", latest.version, source, p)
        return latest.version
    state, audit = service.initial(
        topo, who="zonegate control", why=f"initial state from {source}", now=time.time()
    )
    try:
        await store.append(state, audit, expected_version=0)
    except VersionConflict:
        pass
    latest = await store.latest()
    assert latest is not None  # just written (by us or by the winner of the race)
    return latest.version


def run_control(
    path: str,
    *,
    store_url: str | None = None,
    listen: str = DEFAULT_LISTEN,
    data_dir: str = DEFAULT_DATA_DIR,
    token_file: str | None = None,
) -> int:
    """Run `zonegate control FILE` until SIGTERM/SIGINT.

    Args:
        path: The topology file.
        store_url: `sqlite:///PATH`, `memory://`, `etcd://...`; None: `DATA_DIR/control.db`.
        listen: HOST:PORT of the API; port 0 picks a free port (on the ready line).
        data_dir: Where the default store lives (created if missing).
        token_file: The token file (`api.TokenTable`); None: reads are anonymous and
            every write is refused (a warning says so).

    Returns:
        0 after a clean stop; 1 for a bad topology or token file; 2 for a bad listen
        address or one that cannot be bound (taken, not local), a bad store URL, or a
        store that cannot be opened.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    try:
        topo = load_topology(path)
    except ConfigErrors as e:
        print(e, file=sys.stderr)
        return 1
    try:
        tokens = load_tokens(token_file) if token_file is not None else TokenTable()
    except ValueError as e:
        print(f"zonegate control: --tokens: {e}", file=sys.stderr)
        return 1
    if token_file is None:
        log.warning("no token file: reads are anonymous and every write is refused")
    try:
        host_port = _listen_address(listen)
    except ValueError as e:
        print(f"zonegate control: --listen: {e}", file=sys.stderr)
        return 2
    try:
        sock = _bind(*host_port)
    except OSError as e:
        # create_server's own message repeats the address; the errno's text says it all
        reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        print(f"zonegate control: cannot listen on {listen}: {reason}", file=sys.stderr)
        return 2
    with sock:
        try:
            store, resolved = open_store(store_url, data_dir)
        except (StoreUrlError, OSError) as e:
            print(f"zonegate control: --store: {e}", file=sys.stderr)
            return 2
        return asyncio.run(_serve(path, topo, store, resolved, tokens, sock))


def _bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here rather than inside uvicorn so that a
    taken address is one clear line (uvicorn logs it and exits from a task).

    Raises:
        OSError: The address is taken, not local, or the host does not resolve.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family, backlog=2048)


def _listen_address(text: str) -> tuple[str, int]:
    if text.endswith(":0"):
        found = parse_hostport(text[:-2] + ":1")
        return found.host, 0
    found = parse_hostport(text)
    return found.host, found.port


async def _serve(
    path: str,
    topo: Topology,
    store: Store,
    store_url: str,
    tokens: TokenTable,
    sock: socket.socket,
) -> int:
    import uvicorn

    try:
        version = await ensure_initial(store, topo, path)
    except StoreError as e:
        print(f"zonegate control: store {store_url}: {e}", file=sys.stderr)
        await store.close()
        return 2
    poller = FleetPoller(topo)
    poller.start()
    app = create_app(topo, store, tokens, reports=lambda: poller.reports)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    loop = asyncio.get_running_loop()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # Open long-polls answer now instead of holding the stop up to the
            # graceful-shutdown timeout.
            loop.call_soon_threadsafe(app.state.stopping.set)

    server = Server(config)

    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True
        loop.call_soon_threadsafe(app.state.stopping.set)

    # uvicorn installs its own SIGTERM/SIGINT handlers while serving, and re-raises the
    # signal it caught under the handlers it found once it has shut down gracefully:
    # with the default ones the process would die of that signal before closing the
    # store and exiting 0. These handlers make that second delivery harmless (and stop
    # a server that is still starting).
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                print("zonegate control: the server did not start", file=sys.stderr)
                return 2
            await asyncio.sleep(0.01)
        bound = sock.getsockname()
        host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        print(
            f"zonegate control ready: http://{host}:{bound[1]} version {version} store {store_url}",
            flush=True,
        )
        await task
    finally:
        await poller.stop()
        await store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m zonegate.control.server FILE [options]`."""
    parser = argparse.ArgumentParser(prog="zonegate control")
    parser.add_argument("file", help="topology file")
    parser.add_argument(
        "--store", default=None, help="sqlite:///PATH (default), memory://, etcd://HOST:PORT,..."
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT of the API")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="default store directory")
    parser.add_argument("--tokens", default=None, help="token file (YAML or JSON)")
    args = parser.parse_args(argv)
    return run_control(
        args.file,
        store_url=args.store,
        listen=args.listen,
        data_dir=args.data_dir,
        token_file=args.tokens,
    )


if __name__ == "__main__":
    sys.exit(main())
