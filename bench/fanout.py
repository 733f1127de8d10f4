"""End-to-end fan-out load test: one WHIP publisher, N WHEP viewers, one media worker.

    python -m bench.fanout --viewers 50,100,200 --seconds 10 [--rate 1000] [--workers 1]
                           [--url URL [--secret KEY]] [--json FILE] [--py-spy FILE]

Without ``--url`` it starts a Telebridge server on 127.0.0.1 (a fresh one per viewer
count). The clients (:mod:`bench.loadclient`: real ICE, DTLS and SRTP, no decoding) run
in a process of their own, so the media worker's CPU time, read from its ``stats``
through ``GET /metrics``, is the worker's alone. Once every viewer is connected and
receiving, and after a short warm-up, it measures over ``--seconds``:

* the worker's forwarded RTP packets (``packets_out``) per CPU-second of the worker:
  the figure to compare between versions of the forwarding path;
* the worker's output rate and CPU share, the clients' received packets/s, and loss:
  expected = packets the publisher sent x viewers; ``sfu shortfall`` is what the worker
  did not send, ``loss`` what the viewers did not receive (kernel UDP drops included).

A line on stderr shows progress each second. On a 2-core machine the load generator and
the worker share the cores (by default they are pinned one per core when this script
starts the server), so read the per-CPU-second figure rather than absolute rates.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.server import ROOT, RunningServer

_METRIC = re.compile(
    r"^(telebridge_worker_packets|telebridge_worker_cpu_seconds)\{([^}]*)\}\s+(\S+)", re.M
)


def scrape(url: str) -> dict[str, float]:
    """Sum over workers: packets in/out and CPU seconds, from the Prometheus text."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {"packets_in": 0.0, "packets_out": 0.0, "cpu_seconds": 0.0}
    for name, labels, value in _METRIC.findall(text):
        if name == "telebridge_worker_cpu_seconds":
            out["cpu_seconds"] += float(value)
        elif 'direction="out"' in labels:
            out["packets_out"] += float(value)
        elif 'direction="in"' in labels:
            out["packets_in"] += float(value)
    return out


def udp_counters() -> dict[str, int]:
    """Kernel UDP counters (whole machine): drops at full receive buffers show up here."""
    try:
        lines = [
            line.split()
            for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")
        ]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}
    except (OSError, IndexError, ValueError):
        return {}


def cpu_times() -> dict[str, tuple[int, int, int]]:
    """Per-CPU (busy, total, softirq) jiffies from /proc/stat. Softirq time (where the
    loopback delivers the worker's datagrams to the viewers' sockets) is not charged to
    any process, so the worker's own CPU time leaves it out."""
    out: dict[str, tuple[int, int, int]] = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                fields = [int(v) for v in line.split()[1:9]]
                idle = fields[3] + fields[4]
                out[line.split()[0]] = (sum(fields) - idle, sum(fields), fields[6])
    except (OSError, ValueError):
        pass
    return out


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: list[tuple[int, str]] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                try:
                    cmdline = (
                        (Path("/proc") / str(child) / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode()
                    )
                except OSError:
                    cmdline = ""
                found.append((child, cmdline))
                frontier.append(child)
    return found


def pin(pid: int, cpus: set[int]) -> bool:
    try:
        os.sched_setaffinity(pid, cpus)
        return True
    except (OSError, AttributeError):
        return False


class Progress:
    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + text[:160].ljust(160))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _k(value: float) -> str:
    return f"{value / 1000:.1f}k" if abs(value) >= 1000 else f"{value:.0f}"


class Sample:
    __slots__ = ("at", "status", "metrics", "udp", "cpus")

    def __init__(
        self, at: float, status: dict[str, Any], metrics: dict[str, float], udp: dict[str, int]
    ) -> None:
        self.at = at
        self.status = status
        self.metrics = metrics
        self.udp = udp
        self.cpus = cpu_times()


def measure(a: Sample, b: Sample, viewers: int, worker_cpu: str | None = None) -> dict[str, Any]:
    dt = b.at - a.at
    sa, sb = a.status, b.status
    sent_video = sb["sent_video"] - sa["sent_video"]
    sent_audio = sb["sent_audio"] - sa["sent_audio"]
    connected = sb["connected"]
    expected = sb["expected"] - sa["expected"]
    out = b.metrics["packets_out"] - a.metrics["packets_out"]
    cpu = b.metrics["cpu_seconds"] - a.metrics["cpu_seconds"]
    rx = sb["rx"] - sa["rx"]
    gen_cpu = sb["cpu_seconds"] - sa["cpu_seconds"]
    udp = {
        k: b.udp.get(k, 0) - a.udp.get(k, 0) for k in ("RcvbufErrors", "SndbufErrors", "InErrors")
    }
    machine: dict[str, dict[str, float]] = {}
    for name, (busy, total, softirq) in b.cpus.items():
        if name in a.cpus and total > a.cpus[name][1]:
            span = total - a.cpus[name][1]
            machine[name] = {
                "busy_pct": round(100 * (busy - a.cpus[name][0]) / span, 1),
                "softirq_pct": round(100 * (softirq - a.cpus[name][2]) / span, 1),
            }
    core = machine.get(worker_cpu or "", {})
    core_seconds = core.get("busy_pct", 0) / 100 * dt
    return {
        "viewers": viewers,
        "connected": connected,
        "failed": sb["failed"],
        "window_s": round(dt, 3),
        "publisher_video_pps": round(sent_video / dt, 1),
        "publisher_audio_pps": round(sent_audio / dt, 1),
        "worker_in_pps": round((b.metrics["packets_in"] - a.metrics["packets_in"]) / dt, 1),
        "worker_out_pps": round(out / dt, 1),
        "worker_cpu_pct": round(100 * cpu / dt, 1),
        "forwarded_per_worker_cpu_second": round(out / cpu, 0) if cpu > 0 else None,
        "worker_us_per_forwarded_packet": round(1e6 * cpu / out, 2) if out > 0 else None,
        "worker_core": worker_cpu,
        "worker_core_busy_pct": core.get("busy_pct"),
        "worker_core_softirq_pct": core.get("softirq_pct"),
        "forwarded_per_worker_core_busy_second": round(out / core_seconds, 0)
        if core_seconds > 0
        else None,
        "client_rx_pps": round(rx / dt, 1),
        "client_rx_mbps": round(8 * (sb["rx_bytes"] - sa["rx_bytes"]) / dt / 1e6, 1),
        "expected_pps": round(expected / dt, 1),
        "sfu_shortfall_pct": round(100 * (1 - out / expected), 2) if expected else None,
        "loss_pct": round(100 * (1 - rx / expected), 2) if expected else None,
        "udp_rcvbuf_errors": udp["RcvbufErrors"],
        "loadgen_cpu_pct": round(100 * gen_cpu / dt, 1),
        "machine_cpus": machine,
        "verified_samples": sb["verified"] - sa["verified"],
        "verify_failed": sb["verify_failed"] - sa["verify_failed"],
        "keyframes": sb["keyframes"] - sa["keyframes"],
        "plis": sb["plis"] - sa["plis"],
        "nacks": sb["nacks"] - sa["nacks"],
        "srtp_profile": sb.get("profile", ""),
    }


def run_one(args: argparse.Namespace, viewers: int, progress: Progress) -> dict[str, Any]:
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="telebridge-bench-"))
    url = args.url
    secret = args.secret
    pinned = ""
    worker_cpu: str | None = None
    if url is None:
        extra = "" if args.pacing is None else f"pacing = {'true' if args.pacing else 'false'}\n"
        if args.no_admission:  # the CPU line and the join allowance (a burst of viewers)
            extra += "admission_max_cpu = 0\nadmission_max_joins = 0\n"
        server = RunningServer(tmp, workers=args.workers, extra=extra)
        url, secret = server.base_url, server.secret
    loadgen_log = (tmp / "loadclient.log").open("wb")
    command = [
        sys.executable, "-m", "bench.loadclient",
        "--url", url,
        "--room", f"bench{viewers}",
        "--rooms", str(args.rooms),
        "--viewers", str(viewers),
        "--rate", str(args.rate),
        "--keyframe-interval", str(args.keyframe_interval),
        "--concurrency", str(args.concurrency),
        "--stdin-stop",
        "--max-seconds", str(args.connect_timeout + args.warmup + args.seconds + 30),
    ]  # fmt: skip
    env = dict(os.environ)
    if secret:
        env["TELEBRIDGE_BENCH_SECRET"] = secret  # not on the command line, where ps shows it
    if args.no_audio:
        command.append("--no-audio")
    if args.simulcast:
        command.append("--simulcast")
    client = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=loadgen_log,
    )
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    worker_pids: list[int] = []
    if server is not None:
        worker_pids = [pid for pid, cmd in descendants(server.process.pid) if "sfu.process" in cmd]
    if args.pin and server is not None and len(cpus) >= 2 and len(worker_pids) == 1:
        ok = pin(server.process.pid, {cpus[0]}) and all(pin(pid, {cpus[0]}) for pid in worker_pids)
        ok = pin(client.pid, set(cpus[1:])) and ok
        if ok:
            pinned = f"server+worker on CPU {cpus[0]}, load generator on CPU {','.join(map(str, cpus[1:]))}"
            worker_cpu = f"cpu{cpus[0]}"
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def reader() -> None:
        assert client.stdout is not None
        for raw in client.stdout:
            try:
                lines.put(json.loads(raw))
            except ValueError:
                continue
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    samples: list[Sample] = []
    phase = "connecting"
    phase_at = time.monotonic()
    window: tuple[Sample, Sample] | None = None
    spy: subprocess.Popen[bytes] | None = None
    error = ""
    started = time.monotonic()
    try:
        while True:
            try:
                status = lines.get(timeout=10)
            except queue.Empty:
                error = "the load client stopped reporting"
                break
            if status is None:
                error = "the load client exited"
                break
            now = time.monotonic()
            try:
                metrics = scrape(url)
            except OSError as exc:
                error = f"/metrics: {exc}"
                break
            sample = Sample(now, status, metrics, udp_counters())
            previous = samples[-1] if samples else None
            samples.append(sample)
            if previous is not None:
                dt = sample.at - previous.at
                rx_rate = (status["rx"] - previous.status["rx"]) / dt
                out_rate = (metrics["packets_out"] - previous.metrics["packets_out"]) / dt
                cpu = 100 * (metrics["cpu_seconds"] - previous.metrics["cpu_seconds"]) / dt
                gen = 100 * (status["cpu_seconds"] - previous.status["cpu_seconds"]) / dt
                busy = "/".join(
                    f"{100 * (b - previous.cpus[n][0]) / max(1, t - previous.cpus[n][1]):.0f}"
                    for n, (b, t, _) in sorted(sample.cpus.items())
                    if n in previous.cpus
                )
                progress.show(
                    f"N={viewers} [{now - started:5.1f}s] {phase:<10} viewers {status['connected']}/{viewers}"
                    f" ({status['failed']} failed) | worker out {_k(out_rate)} pkt/s, CPU {cpu:.0f}%"
                    f" | clients rx {_k(rx_rate)} pkt/s, CPU {gen:.0f}% | machine CPUs busy {busy}%"
                )
            if status.get("errors") and status["failed"] and phase == "connecting":
                error = "; ".join(status["errors"])
            if phase == "connecting":
                settled = (
                    status["connected"] + status["failed"] >= viewers
                    and status["receiving"] >= status["connected"]
                )
                if settled and status["connected"] > 0:
                    phase, phase_at = "warm-up", now
                elif now - phase_at > args.connect_timeout:
                    error = f"only {status['connected']} of {viewers} viewers connected in {args.connect_timeout:.0f} s"
                    break
            elif phase == "warm-up" and now - phase_at >= args.warmup:
                phase, phase_at = "measuring", now
                start_sample = sample
                spy_bin = shutil.which("py-spy") or shutil.which(
                    "py-spy", path=str(Path(sys.executable).parent)
                )
                if args.py_spy and worker_pids and spy_bin:
                    spy = subprocess.Popen(
                        [spy_bin, "record", "--pid", str(worker_pids[0]), "--duration", str(int(args.seconds)),
                         "--rate", "250", "--format", args.py_spy_format, "--output", f"{args.py_spy}.N{viewers}",
                         "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
            elif phase == "measuring" and now - phase_at >= args.seconds - 0.05:
                window = (start_sample, sample)
                break
    finally:
        progress.done()
        if client.stdin is not None:
            client.stdin.close()
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
        if spy is not None:
            try:
                spy.wait(15)
            except subprocess.TimeoutExpired:
                spy.kill()
        loadgen_log.close()
        if server is not None:
            server.stop()
    result: dict[str, Any] = {"viewers": viewers, "rate": args.rate, "pinned": pinned}
    if window is not None:
        result.update(measure(window[0], window[1], viewers, worker_cpu))
    if error or window is None:
        result["error"] = error or "no measurement window"
        tail = (tmp / "loadclient.log").read_text(errors="replace")[-2000:]
        if tail:
            result["loadclient_log_tail"] = tail
        if server is not None:
            result["server_log_tail"] = server.logs()[-2000:]
    if not args.keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        result["logs"] = str(tmp)
    return result


COLUMNS = [
    ("viewers", "viewers", "{}"),
    ("connected", "conn", "{}"),
    ("publisher_video_pps", "pub pps", "{:.0f}"),
    ("worker_out_pps", "worker out pps", "{:.0f}"),
    ("worker_cpu_pct", "worker CPU%", "{:.0f}"),
    ("forwarded_per_worker_cpu_second", "fwd/CPU-s", "{:.0f}"),
    ("worker_us_per_forwarded_packet", "us/pkt", "{:.2f}"),
    ("worker_core_busy_pct", "core busy%", "{:.0f}"),
    ("worker_core_softirq_pct", "softirq%", "{:.0f}"),
    ("forwarded_per_worker_core_busy_second", "fwd/core-s", "{:.0f}"),
    ("client_rx_pps", "client rx pps", "{:.0f}"),
    ("sfu_shortfall_pct", "sfu short%", "{:.2f}"),
    ("loss_pct", "loss%", "{:.2f}"),
    ("loadgen_cpu_pct", "loadgen CPU%", "{:.0f}"),
]


def table(results: list[dict[str, Any]]) -> str:
    rows = [[title for _, title, _ in COLUMNS]]
    for result in results:
        row = []
        for key, _, fmt in COLUMNS:
            value = result.get(key)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    for result in results:
        if "error" in result:
            out.append(f"N={result['viewers']}: {result['error']}")
        else:
            notes = []
            if (
                result.get("worker_cpu_pct", 0) > 90
                or (result.get("worker_core_busy_pct") or 0) > 90
            ):
                notes.append("worker core saturated (output capped by CPU)")
            if result.get("loadgen_cpu_pct", 0) > 90:
                notes.append("load generator saturated (client-side loss may be its own)")
            if result.get("verify_failed"):
                notes.append(f"{result['verify_failed']} sampled packets failed to decrypt")
            if notes:
                out.append(f"N={result['viewers']}: " + "; ".join(notes))
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--viewers", default="50", help="viewer count, or a comma-separated list for a sweep"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="publisher video packets/s (audio adds 50/s)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--rooms", type=int, default=1, help="publishers (rooms); viewers spread over them"
    )
    parser.add_argument(
        "--url", default=None, help="use a running server (loopback) instead of starting one"
    )
    parser.add_argument(
        "--secret", default=None, help="its token key (else its /dev/token endpoint is used)"
    )
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--connect-timeout", type=float, default=None, help="default 20 s + 0.15 s per viewer"
    )
    parser.add_argument("--keyframe-interval", type=float, default=4.0)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="WHEP requests in flight while connecting"
    )
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="the publisher sends three encodings; viewers get the top one (layer selection on)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server (with its one worker) and the load generator to separate CPUs",
    )
    parser.add_argument(
        "--pacing",
        default=None,
        type=lambda v: {"on": True, "off": False}[v],
        metavar="on|off",
        help="the worker's [media] pacing (default: the server's default)",
    )
    parser.add_argument(
        "--no-admission",
        action="store_true",
        help="turn admission control off: its CPU line (on a shared machine it refuses "
        "viewers mid-run) and its join allowance (50 a half second)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--py-spy",
        default=None,
        help="record the worker with py-spy during the window into FILE.N<viewers>",
    )
    parser.add_argument(
        "--py-spy-format", default="raw", choices=["raw", "flamegraph", "speedscope"]
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    args.viewer_counts = [int(v) for v in str(args.viewers).split(",") if v.strip()]
    if not args.viewer_counts or min(args.viewer_counts) < 1 or max(args.viewer_counts) > 2000:
        parser.error("--viewers: 1..2000")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds: up to 600")
    if args.url is not None and not re.match(
        r"^http://(127\.0\.0\.1|localhost)(:\d+)?/?$", args.url
    ):
        parser.error("--url must be a server on this machine (http://127.0.0.1:PORT)")
    if args.url is not None:
        args.url = args.url.rstrip("/")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    progress = Progress()
    results = []
    for viewers in args.viewer_counts:
        if args.connect_timeout is None:
            args.connect_timeout = 20 + 0.15 * max(args.viewer_counts)
        results.append(run_one(args, viewers, progress))
        print(table(results[-1:]), file=sys.stderr)
    print(table(results))
    if args.json:
        meta = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "argv": sys.argv[1:],
            "time": time.time(),
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
