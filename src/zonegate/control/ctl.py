"""`zonegate ctl`: drive the control plane's HTTP API from a terminal.

    zonegate ctl [--control URL]... [--token T] state [--version V]
    zonegate ctl history [--since V] [--limit N]
    zonegate ctl cutover DOMAIN --to ZONE [--dry-run] [--reason WHY]
    zonegate ctl restore DOMAIN
    zonegate ctl split DOMAIN --file SPLIT.yaml
    zonegate ctl zone ZONE enable|drain|disable
    zonegate ctl backend POOL BACKEND enable|drain|disable
    zonegate ctl rollback V

`--control` may be given several times (or ZONEGATE_CONTROL, comma-separated): each
URL is tried in order until one answers; default http://127.0.0.1:9900. The token
comes from `--token` or ZONEGATE_TOKEN. The global options may also come after the
command.

Exit status: 0 done; 1 the control plane refused (its HTTP status and detail are
printed; after a 401 or 403, how to pass a token and where tokens come from); 2 a
usage error (bad arguments, unreadable split file); 3 no control URL
answered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

DEFAULT_CONTROL = "http://127.0.0.1:9900"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class _Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control",
        action="append",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="control plane URL; repeat to try several in order "
        f"(default: $ZONEGATE_CONTROL or {DEFAULT_CONTROL})",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token: operator for writes, read or operator for reads "
        "(default: $ZONEGATE_TOKEN)",
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request (10)"
    )

    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument(
        "--dry-run", action="store_true", help="show the predicted shares; change nothing"
    )
    writes.add_argument("--reason", default="", help="why (audit log; required unless dry run)")

    p = argparse.ArgumentParser(
        prog="zonegate ctl", description="Drive the zonegate control plane.", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("state", parents=[common], help="show the current (or a given) version")
    s.add_argument("--version", type=int, default=None, help="show this version instead")
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    h = sub.add_parser("history", parents=[common], help="show the audit log")
    h.add_argument("--since", type=int, default=0, help="entries of versions > since")
    h.add_argument("--limit", type=int, default=100)
    c = sub.add_parser("cutover", parents=[common, writes], help="move a domain to one zone")
    c.add_argument("domain")
    c.add_argument("--to", required=True, metavar="ZONE")
    r = sub.add_parser("restore", parents=[common, writes], help="undo a cut-over")
    r.add_argument("domain")
    sp = sub.add_parser("split", parents=[common, writes], help="set a domain's split map")
    sp.add_argument("domain")
    sp.add_argument("--file", required=True, help="YAML or JSON split map {sharding, zones}")
    z = sub.add_parser("zone", parents=[common, writes], help="set a zone's admin state")
    z.add_argument("zone")
    z.add_argument("action", choices=["enable", "drain", "disable"])
    b = sub.add_parser("backend", parents=[common, writes], help="set a backend's admin state")
    b.add_argument("pool")
    b.add_argument("backend")
    b.add_argument("action", choices=["enable", "drain", "disable"])
    rb = sub.add_parser("rollback", parents=[common, writes], help="new version = old content")
    rb.add_argument("version", type=int)
    return p


def run_ctl(argv: list[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one `zonegate ctl` command (see the module docstring).

    Args:
        argv: The arguments after `ctl`.
        out: Where results go (default stdout).
        err: Where errors go (default stderr).

    Returns:
        The exit status: 0, 1 (refused), 2 (usage), 3 (unreachable).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage already
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    urls: list[str] = getattr(args, "control", None) or [
        u.strip()
        for u in os.environ.get("ZONEGATE_CONTROL", DEFAULT_CONTROL).split(",")
        if u.strip()
    ]
    token = getattr(args, "token", None) or os.environ.get("ZONEGATE_TOKEN")
    timeout = getattr(args, "timeout", 10.0)
    try:
        method, path, params, body, show = _request(args)
    except _Usage as exc:
        print(f"zonegate ctl: {exc}", file=err)
        return EXIT_USAGE
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures: list[str] = []
    for url in urls:
        try:
            with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
                resp = client.request(method, path, params=params, json=body, headers=headers)
        except httpx.TransportError as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        if resp.status_code >= 400:
            print(f"zonegate ctl: {resp.status_code} {_detail(resp)}", file=err)
            hint = _auth_hint(resp.status_code, sent=bool(token))
            if hint:
                print(hint, file=err)
            return EXIT_REFUSED
        show(resp.json(), out)
        return EXIT_OK
    print("zonegate ctl: no control plane answered:", file=err)
    for line in failures:
        print(f"  {line}", file=err)
    return EXIT_UNREACHABLE


Shower = Callable[[Any, TextIO], None]


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any], Any, Shower]:
    """method, path, query, JSON body and how to print the answer, for a command."""
    cmd = args.command
    if cmd == "state":
        path = "/v1/state" if args.version is None else f"/v1/versions/{args.version}"
        return "GET", path, {}, None, _show_json if args.json else _show_state
    if cmd == "history":
        return "GET", "/v1/history", {"since": args.since, "limit": args.limit}, None, _show_history
    params: dict[str, Any] = {}
    if args.dry_run:
        params["dry_run"] = "true"
    if args.reason:
        params["reason"] = args.reason
    body: Any = None
    if cmd == "cutover":
        method, path, body = "POST", f"/v1/cutover/{args.domain}", {"to": args.to}
    elif cmd == "restore":
        method, path = "POST", f"/v1/restore/{args.domain}"
    elif cmd == "split":
        method, path, body = "PUT", f"/v1/split/{args.domain}", _read_split(args.file)
    elif cmd == "zone":
        method, path = "POST", f"/v1/zones/{args.zone}/{args.action}"
    elif cmd == "backend":
        method, path = "POST", f"/v1/pools/{args.pool}/backends/{args.backend}/{args.action}"
    elif cmd == "rollback":
        method, path, body = "POST", "/v1/rollback", {"to_version": args.version}
    else:  # pragma: no cover (argparse only lets the commands above through)
        raise _Usage(f"unknown command {cmd}")
    return method, path, params, body, _show_dry_run if args.dry_run else _show_write


def _read_split(path: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            data = YAML(typ="safe").load(f)
    except (OSError, YAMLError) as exc:
        raise _Usage(f"--file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise _Usage(f"--file {path}: expected a mapping {{sharding, zones}}")
    return data


def _auth_hint(status: int, *, sent: bool) -> str:
    """How to get past a 401 or 403 (empty for any other status)."""
    where = (
        "  The control plane accepts the tokens whose sha256 is in the file it was started "
        "with (zonegate control --tokens FILE; without one it refuses every write). "
        "See docs/control.md#auth."
    )
    if status == 401 and not sent:
        return (
            "  No token was sent: pass --token TOKEN or set ZONEGATE_TOKEN (writes need an "
            "operator token, reads a read or operator token).\n" + where
        )
    if status == 401:
        return "  The token given (--token or ZONEGATE_TOKEN) is not one it knows.\n" + where
    if status == 403:
        return "  Writes need a token whose role is operator in that file.\n" + where
    return ""


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        return resp.text.strip() or resp.reason_phrase
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', d)}" for d in detail
        )
    return str(detail)


# --- printing -----------------------------------------------------------------------


def _show_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out)


def _show_state(state: dict[str, Any], out: TextIO) -> None:
    print(f"version {state['version']}", file=out)
    for domain, split in sorted(state["split"].items()):
        cut = " (cut over)" if domain in state.get("saved_split", {}) else ""
        print(f"split {domain} (sharding {split['sharding']}){cut}", file=out)
        for zone, z in split["zones"].items():
            print(f"  {zone:<16} [{z['lower']},{z['upper']})  {z['domain']}", file=out)
    for zone, admin in sorted(state["zones"].items()):
        print(f"zone {zone:<20} {admin}", file=out)
    for backend, admin in sorted(state["backends"].items()):
        print(f"backend {backend:<24} {admin}", file=out)


def _show_history(entries: list[dict[str, Any]], out: TextIO) -> None:
    for e in entries:
        at = datetime.fromtimestamp(e["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        kind = e["change"]["kind"] if e.get("change") else "initial"
        why = f"  ({e['why']})" if e["why"] else ""
        print(f"v{e['version']:<5} {at}Z  {e['who']}  {kind}{why}", file=out)
        for line in e["diff"]:
            print(f"         {line}", file=out)


def _show_write(answer: dict[str, Any], out: TextIO) -> None:
    print(f"version {answer['version']}", file=out)
    for line in answer["diff"]:
        print(f"  {line}", file=out)


def _show_dry_run(answer: dict[str, Any], out: TextIO) -> None:
    print(f"dry run against version {answer['version']} (nothing written)", file=out)
    for line in answer["diff"]:
        print(f"  {line}", file=out)
    before, after = answer["before"], answer["after"]
    print(f"{'domain':<28} {'zone':<16} {'before':>7} {'after':>7}", file=out)
    for domain in sorted(before.keys() | after.keys()):
        b, a = before.get(domain, {}), after.get(domain, {})
        for zone in sorted(b.keys() | a.keys()):
            print(
                f"{domain:<28} {zone:<16} {_pct(b.get(zone)):>7} {_pct(a.get(zone)):>7}"
                + ("  *" if b.get(zone) != a.get(zone) else ""),
                file=out,
            )


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


__all__ = ["run_ctl"]


if __name__ == "__main__":
    sys.exit(run_ctl(sys.argv[1:]))
