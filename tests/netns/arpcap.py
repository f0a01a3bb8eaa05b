"""Capture ARP frames on an interface and print one JSON line per frame (root).

    python tests/netns/arpcap.py IFACE [--duration SECONDS]

Run it in a namespace (``ip netns exec NS python arpcap.py veth0``). It prints
``arpcap ready`` once its AF_PACKET socket is bound, then for every ARP frame
``{"t": monotonic, "src_mac": ..., "op": 1|2, "sender_ip": ..., "target_ip": ...}``,
and exits after `duration` seconds (a bound, so a forgotten capture never lingers).
The tests' tcpdump: nothing here decodes more than the fields the tests check.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806


def decode(frame: bytes) -> dict[str, object] | None:
    """The fields of an Ethernet/IPv4 ARP frame, or None for anything else."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        return None
    return {
        "src_mac": frame[6:12].hex(":"),
        "op": op,
        "sender_ip": socket.inet_ntoa(frame[28:32]),
        "target_ip": socket.inet_ntoa(frame[38:42]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("iface")
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((args.iface, ETH_P_ARP))
    print("arpcap ready", flush=True)
    end = time.monotonic() + args.duration
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not readable:
            continue
        try:
            frame = sock.recv(2048)
        except OSError as e:  # ENETDOWN while the link is down: keep capturing
            print(json.dumps({"t": time.monotonic(), "error": str(e)}), flush=True)
            continue
        fields = decode(frame)
        if fields is not None:
            print(json.dumps({"t": time.monotonic(), **fields}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
