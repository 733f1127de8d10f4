"""The machine's floor for a site's packets: bare SRTP + UDP on loopback, nothing else.

    python -m bench.floor [--sites 2000] [--site-pps 70] [--receivers 200] [--rate PPS]
                          [--seconds 8] [--json FILE]

Why: every capacity figure in bench/README.md depends on how fast this shared virtual
machine is that day (``bench.fanout`` has read 33k to 165k forwarded packets per worker
CPU-second on the same code). This measures the least any Python SFU and any Python load
generator must spend per packet here, with none of Telebridge's code in the loop:

* a sender process does what the SFU's forwarding cannot avoid for each copy: patch the
  RTP header (sequence number), SRTP-protect it with that receiver's key, ``sendto``;
* a receiver process does what a site cannot avoid: ``recv`` and SRTP-unprotect (a
  browser decrypts every packet; ``--unprotect-every 16`` is what the bench's synthetic
  sites do, which decrypt one in 16 to read its send stamp).

Both run at ``--rate`` packets/s (by default the sites' own, ``--sites`` x ``--site-pps``;
5 packets of 100 B to 2 of 1,000 B, audio and a low layer) for ``--seconds``, each on its
own core, and each reports its own CPU time. The result is CPU microseconds per packet on
each side, and the cores that ``--sites`` sites would need at those rates for the packets
alone: a lower bound, since the real SFU also parses, selects layers, paces and answers
RTCP, and the real site also sends feedback. The cost per packet falls as the rate rises
(more datagrams per wake-up), so measure at the rate you project for. Traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import selectors
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from sfu.srtp import SrtpContext, SrtpError

GCM = 7  # SRTP_AEAD_AES_128_GCM, what Chromium and Telebridge negotiate
GCM_KEY_LEN = 28  # 16-byte key + 12-byte salt
DRAIN = 0.5  # seconds the receiver reads on after the last send


def _keys(receivers: int, seed: int) -> list[bytes]:
    """The same keys in both processes, without sending them across."""
    rng = random.Random(seed)
    return [rng.randbytes(GCM_KEY_LEN) for _ in range(receivers)]


def _receive(
    ports_out: Connection,
    receivers: int,
    seed: int,
    every: int,
    stop: Connection,
    done: Connection,
) -> None:
    """Receiver process: recv every datagram, unprotect one in ``every``, until told to
    stop."""
    keys = _keys(receivers, seed)
    selector = selectors.EpollSelector()
    socks = []
    for key in keys:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, (sock, SrtpContext(GCM, key, key)))
        socks.append(sock)
    ports_out.send([s.getsockname()[1] for s in socks])
    received = failed = 0
    cpu_start = None
    while not stop.poll():
        for ready, _ in selector.select(0.05):
            sock, srtp = ready.data
            recv, unprotect = sock.recv, srtp.unprotect
            if cpu_start is None:
                cpu_start = time.process_time()
            while True:
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                received += 1
                if received % every == 0:
                    try:
                        unprotect(data)
                    except SrtpError:
                        failed += 1
    cpu = time.process_time() - (cpu_start or time.process_time())
    done.send({"received": received, "unprotect_failed": failed, "cpu_s": cpu})
    for sock in socks:
        sock.close()


def _send(ports: list[int], keys: list[bytes], rate: int, seconds: float) -> dict[str, Any]:
    """Sender: patch, protect and sendto one copy per receiver, round robin, at ``rate``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setblocking(False)
    contexts = [SrtpContext(GCM, key, key) for key in keys]
    addresses = [("127.0.0.1", port) for port in ports]
    # 5 audio packets of 100 B to 2 video packets of 1,000 B: 50 + 20 a site-second
    sizes = [100, 100, 1000, 100, 100, 1000, 100]
    templates = [bytearray(b"\x80\x60" + bytes(10) + bytes(size - 12)) for size in sizes]
    seqs = [0] * len(ports)
    sendto, pack_into = sock.sendto, struct.Struct("!H").pack_into
    sent = send_failed = count = 0
    interval = 0.005
    per_tick = max(1, round(rate * interval))
    start_wall = time.monotonic()
    start_cpu = time.process_time()
    next_tick = start_wall
    last_print = start_wall
    while True:
        now = time.monotonic()
        if now - start_wall >= seconds:
            break
        if now < next_tick:
            time.sleep(next_tick - now)
            continue
        next_tick += interval
        for _ in range(per_tick):
            index = count % len(ports)
            packet = templates[count % len(templates)]
            seqs[index] = (seqs[index] + 1) & 0xFFFF
            pack_into(packet, 2, seqs[index])
            packet[11] = index & 0xFF  # an SSRC per receiver
            try:
                sendto(contexts[index].protect(packet), addresses[index])
                sent += 1
            except OSError:
                send_failed += 1
            count += 1
        if now - last_print >= 1.0:
            last_print = now
            elapsed = now - start_wall
            print(
                f"[{elapsed:4.1f}s] sent {sent / elapsed / 1000:.1f}k pkt/s, "
                f"sender CPU {100 * (time.process_time() - start_cpu) / elapsed:.0f} %",
                file=sys.stderr,
            )
    return {
        "sent": sent,
        "send_failed": send_failed,
        "cpu_s": time.process_time() - start_cpu,
        "wall_s": time.monotonic() - start_wall,
    }


def measure(
    receivers: int, rate: int, seconds: float, sites: int, site_pps: float, every: int = 1
) -> dict[str, Any]:
    seed = os.getpid()
    context = multiprocessing.get_context("spawn")
    ports_in, ports_out = context.Pipe(duplex=False)
    stop_in, stop_out = context.Pipe(duplex=False)
    done_in, done_out = context.Pipe(duplex=False)
    child = context.Process(
        target=_receive, args=(ports_out, receivers, seed, every, stop_in, done_out), daemon=True
    )
    child.start()
    try:
        ports = ports_in.recv()
        sender = _send(ports, _keys(receivers, seed), rate, seconds)
        time.sleep(DRAIN)  # what is still in the receiver's queues is read before it stops
        stop_out.send(True)
        receiver = done_in.recv()
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    send_us = round(1e6 * sender["cpu_s"] / max(1, sender["sent"]), 2)
    recv_us = round(1e6 * receiver["cpu_s"] / max(1, receiver["received"]), 2)
    packets = sites * site_pps
    return {
        "receivers": receivers,
        "rate_asked": rate,
        "rate_sent": round(sender["sent"] / sender["wall_s"]),
        "send_failed": sender["send_failed"],  # the kernel refused them (a full send buffer)
        "loss_pct": round(100 * (1 - receiver["received"] / max(1, sender["sent"])), 2),
        "unprotect_every": every,
        "unprotect_failed": receiver["unprotect_failed"],
        "send_us_per_pkt": send_us,
        "receive_us_per_pkt": recv_us,
        "sites": sites,
        "site_pps": site_pps,
        "sfu_cores_floor": round(packets * send_us / 1e6, 2),
        "load_cores_floor": round(packets * recv_us / 1e6, 2),
        "cores_floor": round(packets * (send_us + recv_us) / 1e6, 2),
        "machine_cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=2000, help="sites to project for")
    parser.add_argument("--site-pps", type=float, default=70.0, help="packets a site gets a second")
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument(
        "--rate", type=int, help="packets/s sent in all (default: the sites' packets)"
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--unprotect-every",
        type=int,
        default=1,
        help="the receiver decrypts one packet in N (a browser: 1; the bench's sites: 16)",
    )
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    if args.unprotect_every < 1:
        parser.error("--unprotect-every must be 1 or more")
    rate = args.rate or round(args.sites * args.site_pps)
    result = measure(
        args.receivers, rate, args.seconds, args.sites, args.site_pps, args.unprotect_every
    )
    print(
        f"{result['rate_sent'] / 1000:.1f}k pkt/s to {args.receivers} receivers "
        f"(loss {result['loss_pct']} %): send (patch + SRTP + sendto) "
        f"{result['send_us_per_pkt']} us/pkt, receive (recv + SRTP one in "
        f"{args.unprotect_every}) "
        f"{result['receive_us_per_pkt']} us/pkt.\n"
        f"{args.sites} sites x {args.site_pps:g} pkt/s need at least "
        f"{result['sfu_cores_floor']} cores to send and {result['load_cores_floor']} to "
        f"receive: {result['cores_floor']} of this machine's {result['machine_cores']}."
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
