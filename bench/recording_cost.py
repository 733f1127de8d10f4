"""What recording costs: worker CPU per recorded track against per forwarded viewer, and
the recorder process's CPU per recorded track.

``python -m bench.recording_cost [--rooms 4 --rate 200 --seconds 15]`` starts a server
(one media worker), publishes ``--rooms`` synthetic VP8 + Opus publishers
(bench/loadclient.py), and measures the worker's CPU seconds over ``--seconds`` three
times: publishers alone, with one WHEP viewer per room (video + audio: two streams), and
with one recording per room instead (the same two streams, to the recorder process over
plain RTP). It prints one JSON line. CPU comes from /proc (user + system).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.server import ROOT, RunningServer

KEY, SECRET = "bench", "k" * 40


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int, needle: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", needle], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def api(server: RunningServer, method: str, path: str) -> Any:
    request = urllib.request.Request(server.base_url + path, method=method)
    auth = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    request.add_header("Authorization", f"Basic {auth}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def load(server: RunningServer, rooms: int, viewers: int, rate: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.loadclient",
            "--url",
            server.base_url,
            "--room",
            "cost",
            "--rooms",
            str(rooms),
            "--viewers",
            str(viewers),
            "--rate",
            str(rate),
            "--secret",
            server.secret,
            "--stdin-stop",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def measure(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def wait_lines(client: subprocess.Popen[str], count: int) -> dict[str, Any]:
    """The loadclient's status after ``count`` lines (its peers are up by then)."""
    assert client.stdout is not None
    status: dict[str, Any] = {}
    for _ in range(count):
        status = json.loads(client.stdout.readline())
    return status


def stop(client: subprocess.Popen[str]) -> None:
    assert client.stdin is not None
    client.stdin.close()
    try:
        client.wait(20)
    except subprocess.TimeoutExpired:
        client.kill()


def run(rooms: int, rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RunningServer(
            Path(tmp),
            extra=f'[api]\n[[api.keys]]\nkey = "{KEY}"\nsecret = "{SECRET}"\n'
            f'[recording]\nroot = "{tmp}/rec"\n',
        )
        try:
            (worker,) = children(server.process.pid, "sfu.process")
            (recorder,) = children(server.process.pid, "recording.process")
            pids = {"worker": worker, "recorder": recorder}
            result: dict[str, Any] = {"rooms": rooms, "rate": rate, "seconds": seconds}
            for phase, viewers in (("publishers", 0), ("viewers", rooms)):
                client = load(server, rooms, viewers, rate)
                wait_lines(client, 5)
                result[phase] = measure(pids, seconds)
                if phase == "publishers":  # then the same publishers, recorded
                    ids = [
                        api(server, "POST", f"/api/v1/rooms/cost-{n}/recordings")["id"]
                        for n in range(rooms)
                    ]
                    time.sleep(5)  # past the recorder's wait for the first SR
                    result["recordings"] = measure(pids, seconds)
                    manifests = [api(server, "POST", f"/api/v1/recordings/{i}/stop") for i in ids]
                    result["recorded_bytes"] = sum(f["size"] for m in manifests for f in m["files"])
                    result["recorded_files"] = sum(len(m["files"]) for m in manifests)
                stop(client)
                time.sleep(2)
        finally:
            server.stop()
    base = result["publishers"]["worker"]
    streams = 2 * rooms  # video + audio each
    result["worker_cpu_per_viewer_stream"] = (result["viewers"]["worker"] - base) / streams
    result["worker_cpu_per_recorded_stream"] = (result["recordings"]["worker"] - base) / streams
    result["recorder_cpu_per_stream"] = (
        result["recordings"]["recorder"] - result["publishers"]["recorder"]
    ) / streams
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="video packets/s per publisher")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.rooms, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
