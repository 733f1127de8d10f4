"""telebridge bench SCENARIO: run a named load scenario (bench/scenarios.py) against
a server on this machine and write its results (bench/results.py).

Without ``--url`` it starts its own server on the embedded config (configs/telebridge.toml
when this is a checkout, else the built-in defaults) on a free port, with the join rate
limits off and a room API key of its own, so it can read the server's CPU and memory from
/proc. The synthetic sites (bench/sites.py) run in ``--load-procs`` processes
(bench/loadproc.py); the publishers start first, then the observers (for ``ramp`` step by
step), and once they have settled, after a warm-up, each window of ``--duration`` s is
measured. A progress line goes to stderr every second.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import json
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.fanout import udp_counters
from bench.scenarios import DELAY_P99_LIMIT_MS, LOSS_LIMIT_PCT, Plan
from bench.server import ROOT, RunningServer

EMBEDDED_CONFIG = "configs/telebridge.toml"
WARMUP_S = 2.0
API_KEY = "bench"
ADD_CHUNK = 100  # sites per message to a load process


# -- the server -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: dict[str, dict[str, Any] | list[dict[str, Any]]]) -> str:
    """Tables of scalars and arrays of such tables: all a Telebridge config has."""
    lines: list[str] = []
    for name, table in data.items():
        for one in table if isinstance(table, list) else [table]:
            lines.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in one.items()]
            lines.append("")
    return "\n".join(lines)


def find_embedded() -> Path | None:
    for base in (Path.cwd(), ROOT):
        path = base / EMBEDDED_CONFIG
        if path.is_file():
            return path
    return None


def server_config(
    source: Path | None, api_secret: str, workers: int | None
) -> Callable[[int, str], str]:
    """``config_text(port, secret)`` for RunningServer: ``source`` (or the built-in
    defaults) on 127.0.0.1 with a free HTTP port, ephemeral media ports, an inline secret,
    one API key of ours, no webhooks and no join rate limits (every site comes from
    127.0.0.1)."""
    data: dict[str, Any] = tomllib.loads(source.read_text()) if source else {}

    def text(port: int, secret: str) -> str:
        config = {k: dict(v) for k, v in data.items() if isinstance(v, dict)}
        config.setdefault("server", {}).update(host="127.0.0.1", port=port, dev_tokens=True)
        auth = config.setdefault("auth", {})
        auth.pop("secret_file", None)
        auth["secret"] = secret
        media = config.setdefault("media", {})
        media.update(listen="127.0.0.1", announce="127.0.0.1", base_port=0, tcp_base_port=0)
        if workers is not None:
            media["workers"] = workers
        api = config.setdefault("api", {})
        api.pop("keys", None)
        api["metrics_auth"] = False
        ws = config.setdefault("ws", {})
        ws.update(join_limit=0, identity_join_limit=0)
        config.setdefault("logging", {})["level"] = "WARNING"
        out: dict[str, Any] = dict(config)
        out.pop("api", None)
        out["api"] = api
        out.pop("webhooks", None)
        text = dump_toml(out)
        return text + dump_toml({"api.keys": [{"key": API_KEY, "secret": api_secret}]})

    return text


def create_room(url: str, api_secret: str, name: str, observers: int) -> None:
    """Rooms take 1,000 observers by default: make each one big enough first."""
    body = json.dumps({"name": name, "max_viewers": observers + 16}).encode()
    auth = base64.b64encode(f"{API_KEY}:{api_secret}".encode()).decode()
    request = urllib.request.Request(
        url + "/api/v1/rooms",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already there
            raise RuntimeError(
                f"creating room {name}: HTTP {exc.code} {exc.read()[:200]!r}"
            ) from None


# -- /proc -------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Every process below ``pid`` (the media workers, and anything they start)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append(child)
                frontier.append(child)
    return found


def is_media_worker(pid: int) -> bool:
    """Whether ``pid`` runs ``python -m sfu.process`` (not the recorder, not a helper)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"sfu.process" in argv


_WORKER_CPU = re.compile(r"^telebridge_worker_cpu_seconds\{[^}]*\}\s+(\S+)", re.M)


class ServerProbe:
    """The SFU's CPU seconds and RSS: from /proc when we started it (the media workers apart;
    the control process with the recorder), else the workers' CPU from /metrics (RSS
    unknown)."""

    def __init__(self, url: str, pid: int | None) -> None:
        self.url = url
        self.pid = pid

    def sample(self) -> dict[str, float | None]:
        if self.pid is not None:
            below = children(self.pid)
            workers = [p for p in below if is_media_worker(p)]
            # The rest (the recorder process) is counted with the control process.
            control = [self.pid] + [p for p in below if p not in workers]
            return {
                "control_cpu_s": sum(proc_cpu(p) for p in control),
                "worker_cpu_s": sum(proc_cpu(p) for p in workers),
                "control_rss_mb": sum(proc_rss_mb(p) for p in control),
                "worker_rss_mb": sum(proc_rss_mb(p) for p in workers),
                "workers": len(workers),
            }
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
                text = response.read().decode()
            worker = sum(float(v) for v in _WORKER_CPU.findall(text))
        except (OSError, ValueError):
            worker = None
        return {"control_cpu_s": None, "worker_cpu_s": worker, "control_rss_mb": None}


# -- the run -----------------------------------------------------------------------------------


class LoadProcs:
    """The load processes and their latest status lines. Process 0 runs the publishers
    alone, so that their pacing (and stamps) never wait behind the observers' work; the
    observers are spread over the ``count`` others."""

    def __init__(self, count: int, url: str, secret: str | None, concurrency: int) -> None:
        from bench.loadproc import process_main

        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        self.status: list[dict[str, Any]] = [{} for _ in range(count + 1)]
        for _ in range(count + 1):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=process_main, args=(theirs, url, secret, concurrency), daemon=True
            )
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        self.next = 0  # the observer process that gets the next site

    def poll(self, timeout: float = 0.0) -> list[tuple[int, str, dict[str, Any]]]:
        """Read what has arrived; statuses are kept, anything else is returned."""
        other = []
        deadline = time.monotonic() + timeout
        while True:
            for index, conn in enumerate(self.conns):
                try:
                    while conn.poll():
                        kind, data = conn.recv()
                        if kind == "status":
                            self.status[index] = data
                        else:
                            other.append((index, kind, data))
                except (EOFError, OSError):
                    proc = self.procs[index]
                    if not proc.is_alive():
                        raise RuntimeError(
                            f"load process {index} died (exit code {proc.exitcode})"
                        ) from None
            if other or time.monotonic() >= deadline:
                return other
            time.sleep(0.02)

    def add(self, specs: list[Any], only: int | None = None) -> None:
        """Spread ``specs`` over the observer processes (round robin), or give them all
        to ``only``."""
        shares: list[list[dict[str, Any]]] = [[] for _ in self.conns]
        for spec in specs:
            if only is not None:
                shares[only].append(dataclasses.asdict(spec))
            else:
                shares[1 + self.next % (len(self.conns) - 1)].append(dataclasses.asdict(spec))
                self.next += 1
        for conn, share in zip(self.conns, shares, strict=True):
            for start in range(0, len(share), ADD_CHUNK):
                conn.send(("add", share[start : start + ADD_CHUNK]))

    def ask(self, command: str, answer: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        for conn in self.conns:
            conn.send((command,))
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.conns):
            if time.monotonic() > deadline:
                raise RuntimeError(f"load processes did not answer {command!r}")
            for index, kind, data in self.poll(0.5):
                if kind == answer:
                    got[index] = data
        return [got[i] for i in range(len(self.conns))]

    def total(self, key: str) -> float:
        return float(sum(s.get(key, 0) for s in self.status))

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 20
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


class Progress:
    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150))
            self.shown = True
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, url: str, probe: ServerProbe) -> None:
        self.args = args
        self.plan = plan
        self.url = url
        self.probe = probe
        self.progress = Progress()
        self.started = time.monotonic()
        self.timeline: list[dict[str, Any]] = []
        self.phase = "starting"
        self.expected = 0
        self.last: tuple[float, dict[str, float | None], float] | None = None
        self.procs: LoadProcs | None = None

    def tick(self) -> None:
        """Once a second: read the load processes, sample the server, show progress."""
        assert self.procs is not None
        now = time.monotonic()
        server = self.probe.sample()
        loadgen = self.procs.total("cpu_s")
        point: dict[str, Any] = {
            "t": round(now - self.started, 1),
            "phase": self.phase,
            "sites": int(self.procs.total("sites")),
            "media": int(self.procs.total("media")),
            "refused": int(self.procs.total("refused")),
            "failed": int(self.procs.total("failed")),
            "rx": int(self.procs.total("rx")),
        }
        cpu_text = ""
        if self.last is not None:
            then, before, loadgen_before = self.last
            dt = now - then
            cpu = _cpu_pct(before, server, dt)
            point.update(cpu)
            point["loadgen_cpu_pct"] = round(100 * (loadgen - loadgen_before) / dt, 1)
            rx_rate = (point["rx"] - self.timeline[-1]["rx"]) / dt if self.timeline else 0
            cpu_text = (
                f" | SFU CPU {cpu.get('sfu_cpu_pct') or 0:.0f}% | load CPU "
                f"{point['loadgen_cpu_pct']:.0f}% | rx {rx_rate / 1000:.1f}k pkt/s"
            )
        if server.get("control_rss_mb") is not None:
            point["sfu_rss_mb"] = round(
                (server["control_rss_mb"] or 0) + (server.get("worker_rss_mb") or 0), 1
            )
        self.last = (now, server, loadgen)
        self.timeline.append(point)
        self.progress.show(
            f"[{point['t']:6.1f}s] {self.plan.scenario} {self.phase}: sites with media "
            f"{point['media']}/{self.expected}, {point['refused']} refused, "
            f"{point['failed']} failed{cpu_text}"
        )

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.procs is not None
            self.procs.poll(min(1.0, max(0.0, deadline - time.monotonic())))
            self.tick()

    def settle(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` sites have media, were refused or failed."""
        assert self.procs is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.procs.poll(1.0)
            self.tick()
            done = self.procs.total("media") + self.procs.total("refused")
            done += self.procs.total("failed")
            if self.procs.total("sites") >= count and done >= count:
                return True
        return False

    def measure(self, joining: set[str]) -> dict[str, Any]:
        """One window: mark, wait, report; the figures of every site and the server's."""
        assert self.procs is not None
        self.phase = "warm-up"
        self.wait(WARMUP_S)
        self.phase = "measuring"
        self.procs.ask("mark", "marked")
        udp = udp_counters()
        start = (time.monotonic(), self.probe.sample(), self.procs.total("cpu_s"))
        self.wait(self.args.duration)
        reports = self.procs.ask("report", "report")
        end = (time.monotonic(), self.probe.sample(), sum(r["status"]["cpu_s"] for r in reports))
        dt = end[0] - start[0]
        sites = [row for report in reports for row in report["sites"]]
        from bench import results

        row = results.aggregate(sites, dt, joining)
        row.update(_cpu_pct(start[1], end[1], dt))
        row["loadgen_cpu_pct"] = round(100 * (end[2] - start[2]) / dt, 1)
        results.per_packet(row)
        after = udp_counters()
        # the whole machine's: datagrams dropped at a full socket buffer (ours or not)
        row["udp_rcvbuf_errors"] = after.get("RcvbufErrors", 0) - udp.get("RcvbufErrors", 0)
        # of them: at the sites' sockets (the load processes behind), at the SFU's
        row["site_socket_drops"] = sum(r.get("site_socket_drops", 0) for r in reports)
        sfu_ports: dict[int, int] = {}
        for report in reports:
            for port, count in report.get("sfu_socket_drops", {}).items():
                sfu_ports[port] = max(sfu_ports.get(port, 0), count)
        row["sfu_socket_drops"] = sum(sfu_ports.values())
        row["udp_sndbuf_errors"] = after.get("SndbufErrors", 0) - udp.get("SndbufErrors", 0)
        row["loadavg"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        server = end[1]
        if server.get("control_rss_mb") is not None:
            row["control_rss_mb"] = round(server["control_rss_mb"] or 0, 1)
            row["worker_rss_mb"] = round(server.get("worker_rss_mb") or 0, 1)
            row["sfu_rss_mb"] = round(row["control_rss_mb"] + row["worker_rss_mb"], 1)
            row["workers"] = server.get("workers")
            if self.baseline is not None and row["observers"]:
                per = 1024 / row["observers"]
                row["control_rss_kb_per_site"] = round(
                    (row["control_rss_mb"] - (self.baseline.get("control_rss_mb") or 0)) * per, 1
                )
                row["worker_rss_kb_per_site"] = round(
                    (row["worker_rss_mb"] - (self.baseline.get("worker_rss_mb") or 0)) * per, 1
                )
        else:
            row["sfu_rss_mb"] = None
        return row

    baseline: dict[str, float | None] | None = None

    def run(self) -> tuple[list[dict[str, Any]], int | None]:
        args = self.args
        self.procs = LoadProcs(args.load_procs, self.url, args.secret, args.concurrency)
        rows: list[dict[str, Any]] = []
        capacity: int | None = None
        try:
            self.phase = "publishing"
            self.expected = len(self.plan.publishers)
            self.procs.add(self.plan.publishers, only=0)
            deadline = time.monotonic() + 30
            while self.procs.total("publishers") < len(self.plan.publishers):
                if time.monotonic() > deadline:
                    errors = [e for s in self.procs.status for e in s.get("errors", [])]
                    raise RuntimeError(f"the publishers did not connect: {errors}")
                self.procs.poll(1.0)
                self.tick()
            self.baseline = self.probe.sample()
            for number, step in enumerate(self.plan.steps, 1):
                self.phase = "joining" if len(self.plan.steps) == 1 else f"step {number} joining"
                self.expected += len(step)
                self.procs.add(step)
                timeout = args.connect_timeout or (30 + 0.03 * len(step))
                if not self.settle(self.expected, timeout):
                    self.progress.note(f"not every site settled within {timeout:.0f} s")
                row = self.measure({spec.identity for spec in step})
                row["step"] = number
                rows.append(row)
                self.progress.note(_line(row))
                if self.plan.scenario == "ramp":
                    if _good(row):
                        capacity = row["sites"]
                    else:
                        self.progress.note("ramp: over the limit, stopping")
                        break
        finally:
            self.phase = "stopping"
            self.procs.stop()
        return rows, capacity


def _cpu_pct(
    a: dict[str, float | None], b: dict[str, float | None], dt: float
) -> dict[str, float | None]:
    def delta(key: str) -> float | None:
        x, y = a.get(key), b.get(key)
        return round(100 * (y - x) / dt, 1) if x is not None and y is not None else None

    control, worker = delta("control_cpu_s"), delta("worker_cpu_s")
    total = None if control is None and worker is None else (control or 0) + (worker or 0)
    return {
        "sfu_cpu_pct": None if total is None else round(total, 1),
        "control_cpu_pct": control,
        "worker_cpu_pct": worker,
    }


def _good(row: dict[str, Any]) -> bool:
    loss = row.get("loss_pct")
    delay = row.get("delay_p99_ms")
    return (
        row["sites_connected"] == row["sites"]
        and loss is not None
        and loss <= LOSS_LIMIT_PCT
        and delay is not None
        and delay <= DELAY_P99_LIMIT_MS
    )


def _line(row: dict[str, Any]) -> str:
    refused = row.get("refused_s_max")
    return (
        f"{row['sites']} sites: {row['sites_connected']} with media, {row['sites_refused']} "
        f"refused{f' (answered within {refused} s)' if refused is not None else ''}; "
        f"loss {row['loss_pct']} %, delay p50/p99 {row['delay_p50_ms']}/"
        f"{row['delay_p99_ms']} ms, join p99/max {row['join_s_p99']}/{row['join_s_max']} s "
        f"(ICE/DTLS p99 {row['ice_s_p99']}/{row['dtls_s_p99']} s); "
        f"SFU CPU {row.get('sfu_cpu_pct')} %, RSS {row.get('sfu_rss_mb')} MB"
    )


def run(args: argparse.Namespace) -> int:
    try:
        plan = scenarios.build(
            args.scenario,
            args.sites,
            None if args.layer == "auto" else args.layer,
            args.room_size,
            args.step,
            args.weak_share,
            args.twcc,
        )
    except ValueError as exc:
        print(f"telebridge bench: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"bench-results/{args.scenario}-{stamp}")
    server: RunningServer | None = None
    url = args.url
    source = None
    if url is None:
        source = find_embedded()
        api_secret = secrets.token_urlsafe(36)
        tmp = Path(tempfile.mkdtemp(prefix="telebridge-bench-"))
        server = RunningServer(tmp, config_text=server_config(source, api_secret, args.workers))
        url, args.secret = server.base_url, server.secret
        for room, observers in plan.rooms.items():
            if observers + 16 > 1000:
                create_room(url, api_secret, room, observers)
    url = url.rstrip("/")
    what = (
        f"started on {source or 'the built-in defaults'} (port {url.rsplit(':', 1)[1]})"
        if server
        else url
    )
    meta: dict[str, Any] = {
        "scenario": args.scenario,
        "description": plan.description,
        "server": what,
        "sites_planned": plan.total,
        "duration": args.duration,
        "load_procs": args.load_procs,
        "layer": args.layer,
        "twcc": args.twcc,
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "argv": sys.argv[1:],
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "shared": args.shared,
    }
    bench = Bench(args, plan, url, ServerProbe(url, server.process.pid if server else None))
    error = ""
    rows: list[dict[str, Any]] = []
    capacity = None
    try:
        rows, capacity = bench.run()
    except (RuntimeError, OSError) as exc:
        error = str(exc)
        bench.progress.note(f"telebridge bench: {error}")
    finally:
        if server is not None:
            if error:
                meta["server_log_tail"] = server.logs()[-3000:]
            server.stop()
    if args.scenario == "ramp":
        meta["capacity"] = capacity
    if error:
        meta["error"] = error
    from bench import results

    summary = results.write(out, meta, rows, bench.timeline)
    if args.scenario == "ramp":
        summary["capacity"] = capacity
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results in {out}/ (summary.json, summary.md, charts)")
    for row in rows:
        print(_line(row))
    if error or not rows:
        return 1
    return 0


def add_parser(sub: Any) -> None:
    """``telebridge bench``, for signaling/cli.py."""
    parser = sub.add_parser(
        "bench",
        help="run a load scenario against a server on this machine and write its results",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("scenario", choices=scenarios.SCENARIOS)
    parser.add_argument(
        "--sites", type=int, default=50, help="sites in all, publishers included (default 50)"
    )
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds measured (per ramp step)"
    )
    parser.add_argument("--out", default=None, help="default bench-results/SCENARIO-TIMESTAMP")
    parser.add_argument(
        "--url", default=None, help="a running server on this machine instead of our own"
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("TELEBRIDGE_BENCH_SECRET"),
        help="with --url: its token key (default $TELEBRIDGE_BENCH_SECRET; else /dev/token)",
    )
    parser.add_argument(
        "--load-procs",
        type=int,
        default=1,
        help="processes running the observing sites (the publishers get one more of their own)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="media workers of our server (default: config)"
    )
    parser.add_argument(
        "--layer",
        default="low",
        choices=["low", "medium", "high", "auto"],
        help="the observers' max_layer (auto: the server's choice)",
    )
    parser.add_argument("--room-size", type=int, default=5, help="rooms: sites per room")
    parser.add_argument("--step", type=int, default=None, help="ramp: observers added a step")
    parser.add_argument(
        "--weak-share", type=float, default=0.2, help="mix: share of sites on weak links"
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=None, help="default 30 s + 0.03 s a site"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="sites joining at once per load process"
    )
    parser.add_argument(
        "--no-twcc",
        dest="twcc",
        action="store_false",
        help="sites send no transport-cc feedback (browsers do, every 50-100 ms)",
    )
    parser.add_argument(
        "--shared", action="store_true", help="note in the results that the machine was shared"
    )
    parser.set_defaults(func=_checked)


def _checked(args: argparse.Namespace) -> int:
    if args.url is not None and not re.match(
        r"^http://(127\.0\.0\.1|localhost)(:\d+)?/?$", args.url
    ):
        print("telebridge bench: --url must be a server on this machine", file=sys.stderr)
        return 2
    if not 1 <= args.load_procs <= 64:
        print("telebridge bench: --load-procs: 1..64", file=sys.stderr)
        return 2
    if not 0 < args.duration <= 3600:
        print("telebridge bench: --duration: up to 3600 s", file=sys.stderr)
        return 2
    if not 2 <= args.sites <= 20000:
        print("telebridge bench: --sites: 2..20000", file=sys.stderr)
        return 2
    return run(args)
