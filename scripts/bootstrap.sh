#!/bin/sh
# Prepare a virtualenv with zonegate and its test tools, on a fresh Debian 12 too.
# Idempotent: does nothing when .venv is already up to date with pyproject.toml.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.installed"

need_apt=""
if ! command -v python3 >/dev/null 2>&1; then need_apt="python3 python3-venv python3-dev"; fi
if [ -n "$need_apt" ]; then
    echo "bootstrap: installing $need_apt with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt build-essential
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: zonegate needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }

# Real peers the tests talk to: dig (dnsutils), unbound as a LocalDNS, an etcd cluster,
# and a browser for the dashboard.
missing=""
command -v dig >/dev/null 2>&1 || missing="$missing dnsutils"
command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || missing="$missing unbound"
[ -x /usr/bin/etcd ] || missing="$missing etcd-server"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
# The VRRP tests in network namespaces (tests/netns) and bench/vrrp_bench.py: keepalived
# as the peer, nft for the split-brain fault.
[ -x /usr/sbin/keepalived ] || missing="$missing keepalived"
[ -x /usr/sbin/nft ] || missing="$missing nftables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"  # namespaces, veth
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing$missing with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    # The tests start unbound, etcd and keepalived themselves; the distro services must not run.
    for svc in unbound etcd keepalived; do
        (systemctl disable --now "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null) || true
    done
fi

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then exit 0; fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || {
        echo "bootstrap: installing python3-venv with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        rm -rf "$VENV"; python3 -m venv "$VENV"; }
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
touch "$STAMP"
