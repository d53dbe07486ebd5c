"""Raw Ethernet frames in and out of network namespaces, for the antispoof tests.

As a program, run inside a namespace (`ip netns exec NS python3 packets.py ...`):
  send IFACE HEX...   send each frame (hex) on IFACE through an AF_PACKET socket
  sniff IFACE         print "ready", then every frame IFACE receives (hex, one a
                      line) until stdin is closed
As a module: Guest (a namespace holding the guest end of a vif) and Sniffer.
"""
import os
import select
import socket
import subprocess
import sys

PYTHON = "/usr/bin/python3"
HERE = os.path.abspath(__file__)
ETH_P_ALL = 0x0003


def _send(iface, frames):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for frame in frames:
            s.send(bytes.fromhex(frame))


def _sniff(iface):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
        s.bind((iface, 0))
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select([s, sys.stdin], [], [], 5)
            if sys.stdin in ready and not sys.stdin.read(1):
                break
            if s in ready:
                data, addr = s.recvfrom(65535)
                if addr[2] != socket.PACKET_OUTGOING:
                    print(data.hex(), flush=True)


class Sniffer:
    """Frames arriving on a device of a namespace while the `with` block runs."""

    def __init__(self, netns, iface):
        self.argv = ["ip", "netns", "exec", netns, PYTHON, HERE, "sniff", iface]
        self.frames = set()

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc):
        import time
        time.sleep(0.3)                 # frames still on their way through the bridge
        out, _ = self.proc.communicate(input="", timeout=20)
        self.frames = {bytes.fromhex(line) for line in out.split()}
        return False


def send(netns, iface, frames):
    subprocess.run(["ip", "netns", "exec", netns, PYTHON, HERE, "send", iface]
                   + [bytes(f).hex() for f in frames], check=True, timeout=20)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        _send(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "sniff":
        _sniff(sys.argv[2])
