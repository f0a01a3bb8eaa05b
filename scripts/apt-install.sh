#!/bin/sh
# Install Debian packages with apt-get, waiting for the dpkg lock instead of failing.
#
#   scripts/apt-install.sh PACKAGE...
#
# When another apt-get, dpkg or unattended-upgrades holds the lock, say who and wait
# (up to APT_LOCK_TIMEOUT seconds, 600 by default); apt-get itself also gets
# `-o DPkg::Lock::Timeout`, so a lock taken between our check and its start is waited for
# too. APT_LOCKS (space-separated paths) overrides the lock files watched, for tests.
set -eu
[ $# -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
TIMEOUT=${APT_LOCK_TIMEOUT:-600}
LOCKS=${APT_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}

# The pid holding a POSIX lock on one of LOCKS (apt and dpkg use fcntl locks, which
# /proc/locks lists as MAJ:MIN:INODE), or nothing.
lock_holder() {
    for f in $LOCKS; do
        [ -e "$f" ] || continue
        ino=$(stat -c %i "$f")
        pid=$(awk -v ino="$ino" '{ for (i = 1; i <= NF; i++) if ($i ~ ":" ino "$") { print $(i - 1); exit } }' /proc/locks)
        if [ -n "$pid" ]; then echo "$pid"; return; fi
    done
}

wait_for_lock() {
    holder=$(lock_holder)
    [ -n "$holder" ] || return 0
    what=$(cat "/proc/$holder/comm" 2>/dev/null || echo "?")
    echo "bootstrap: the dpkg lock is held by pid $holder ($what); waiting for it (up to ${TIMEOUT}s)"
    waited=0
    while [ -n "$(lock_holder)" ]; do
        if [ "$waited" -ge "$TIMEOUT" ]; then
            echo "bootstrap: the dpkg lock is still held after ${TIMEOUT}s; giving up" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "bootstrap: the dpkg lock is free after ${waited}s"
}

apt() {
    wait_for_lock
    DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$TIMEOUT" "$@"
}

echo "bootstrap: installing $* with apt-get"
apt update -qq
apt install -y -qq --no-install-recommends "$@"
