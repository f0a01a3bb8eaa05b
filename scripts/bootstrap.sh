#!/bin/sh
# Prepare .venv for `make demo` or `make test`, on a fresh Debian 12 too.
#
#   scripts/bootstrap.sh demo     Python >= 3.11 with venv (apt: python3 python3-venv, only
#                                 when missing), then zonegate into .venv (pip install -e .)
#   scripts/bootstrap.sh test     the same, plus the real peers the tests talk to (apt, only
#                                 when missing: dnsutils unbound etcd-server chromium
#                                 keepalived nftables iproute2 haproxy) and the test tools
#                                 (pip install -e '.[test]')
#   scripts/bootstrap.sh --list demo|test    print the apt packages that mode may install
#
# Idempotent: installs nothing that is already there. apt-get waits for the dpkg lock
# (scripts/apt-install.sh) instead of failing when another apt-get holds it.
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

DEMO_APT="python3 python3-venv"
TEST_APT="dnsutils unbound etcd-server chromium keepalived nftables iproute2 haproxy"

usage() { echo "usage: $0 [--list] demo|test" >&2; exit 2; }
list=""
if [ "${1:-}" = "--list" ]; then list=1; shift; fi
[ $# -eq 1 ] || usage
mode=$1
case "$mode" in
    demo) apt_all=$DEMO_APT; extra="" ;;
    test) apt_all="$DEMO_APT $TEST_APT"; extra="[test]" ;;
    *) usage ;;
esac
if [ -n "$list" ]; then echo "$apt_all"; exit 0; fi

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: missing $*, and no apt-get to install it; install it and rerun" >&2
        exit 1
    fi
    ./scripts/apt-install.sh "$@"
}

# Python >= 3.11 with venv: all the demo needs from the system.
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: zonegate needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

if [ "$mode" = test ]; then
    # Real peers the tests talk to: dig (dnsutils), unbound as a LocalDNS, an etcd
    # cluster, a browser for the dashboard; keepalived as the VRRP peer and nft for the
    # split-brain fault in tests/netns and bench/vrrp_bench.py; ip for namespaces;
    # HAProxy for the haproxy engine of `zonegate lb` (the tests start their own).
    missing=""
    command -v dig >/dev/null 2>&1 || missing="$missing dnsutils"
    command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || missing="$missing unbound"
    [ -x /usr/bin/etcd ] || missing="$missing etcd-server"
    [ -x /usr/bin/chromium ] || missing="$missing chromium"
    [ -x /usr/sbin/keepalived ] || missing="$missing keepalived"
    [ -x /usr/sbin/nft ] || missing="$missing nftables"
    command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
    [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086 # one word per package
        apt_install $missing
        # The tests start unbound, etcd, keepalived and haproxy themselves; the distro
        # services must not run.
        for svc in unbound etcd keepalived haproxy; do
            (systemctl disable --now "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null) || true
        done
    fi
fi

# The stamp of a mode is newer than pyproject.toml once that mode's pip install is done;
# the test install covers the demo's.
stamp() { echo "$VENV/.installed-$1"; }
fresh() { [ -f "$(stamp "$1")" ] && [ "$(stamp "$1")" -nt pyproject.toml ]; }
if fresh "$mode" || { [ "$mode" = demo ] && fresh test; }; then exit 0; fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".$extra"
touch "$(stamp "$mode")"
