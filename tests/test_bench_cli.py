"""`telebridge bench` end to end: the real command starts its own server on the embedded
config, runs a small webinar of synthetic /ws sites over two load processes, and writes
its results. It asserts what a user reads (every site got media, the summary's fields,
the charts), never a timing.

The command runs with ``pytest`` and the ``tests`` package made unimportable, as on a
plain install without the dev extras."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from bench.server import ROOT

SITES = 50
REQUIRED = (
    "sites",
    "sites_connected",
    "loss_pct",
    "delay_p50_ms",
    "delay_p99_ms",
    "join_s_p99",
    "join_s_max",
    "ice_s_p99",
    "dtls_s_p99",
    "sfu_cpu_pct",
    "sfu_rss_mb",
    "control_rss_kb_per_site",
    "worker_rss_kb_per_site",
    "rx_pkt_s",
    "worker_us_per_pkt",
    "loadgen_us_per_pkt",
)


def _blocker(tmp_path: Path) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import pytest`` and ``import tests``
    fail, as they would without the dev extras and outside the checkout."""
    blocked = tmp_path / "blocked"
    for name in ("pytest", "tests", "_pytest"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed (plain install)')\n"
        )
    return blocked


def test_bench_webinar_every_site_gets_media(tmp_path):
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(_blocker(tmp_path)))
    telebridge = Path(sys.executable).parent / "telebridge"
    command = [str(telebridge)] if telebridge.exists() else [sys.executable, "-m", "signaling.cli"]
    run = subprocess.run(
        [
            *command,
            "bench",
            "webinar",
            "--sites",
            str(SITES),
            "--duration",
            "15",
            "--load-procs",
            "2",
            "--connect-timeout",
            "120",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    # The live progress line went to stderr.
    assert "webinar measuring: sites with media" in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    missing = [key for key in REQUIRED if key not in summary]
    assert not missing, f"summary.json lacks {missing}"
    assert summary["sites"] == SITES
    # Every site (the lead publishing, 49 observers) got its audio and video.
    assert summary["sites_connected"] == SITES, summary.get("errors")
    assert summary["sites_refused"] == summary["sites_failed"] == summary["sites_pending"] == 0
    assert summary["observers"] == SITES - 1
    # Delay was measured from the publisher's stamps, loss from the sequence numbers.
    assert summary["delay_samples"] > 0 and summary["delay_p50_ms"] is not None
    assert summary["loss_pct"] is not None and summary["verify_failed"] == 0
    # Each observer's handshakes were timed: ICE up to the first checked STUN answer,
    # then DTLS up to the SRTP keys.
    assert summary["ice_s_p50"] >= 0 and summary["dtls_s_p50"] > 0
    # The server we started was measured from /proc.
    assert summary["sfu_rss_mb"] > 0 and summary["sfu_cpu_pct"] > 0
    # Per-packet costs, to read against bench.floor: over the packets the sites received.
    assert summary["rx_pkt_s"] > 0
    assert summary["worker_us_per_pkt"] > 0 and summary["loadgen_us_per_pkt"] > 0
    assert "configs/telebridge.toml" in summary["meta"]["server"]
    for chart in ("cpu.png", "loss.png", "delay.png", "join.png", "timeline.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    markdown = (out / "summary.md").read_text()
    assert "| 50 | 50 |" in markdown and "![cpu.png](cpu.png)" in markdown


def test_bench_rejects_a_bad_scenario_with_a_clear_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "bench", "consult", "--sites", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "consult needs at least 3" in run.stderr


def test_bench_is_packaged_and_imports_nothing_of_the_dev_extras():
    """The wheel's package list has bench, and nothing in bench/ imports tests or pytest
    (the test above runs it so; a fresh venv install was also checked by hand)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ("bench", "sfu", "sfu.feedback", "signaling", "recording"):
        assert any(fnmatch.fnmatch(package, pattern) for pattern in include), package
    assert any(dep.startswith("matplotlib") for dep in project["project"]["dependencies"])
    for path in (ROOT / "bench").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("tests", "pytest", "_pytest"), (
                    f"{path.name} imports {name}"
                )


def test_bench_fanout_starts_without_the_dev_extras(tmp_path):
    """`python -m bench.fanout` once imported tests.conftest (and so pytest)."""
    env = dict(os.environ, PYTHONPATH=f"{_blocker(tmp_path)}{os.pathsep}{ROOT}")
    for module in ("bench.fanout", "bench.loadclient", "bench.linkemu"):
        run = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, module + ": " + run.stderr[-2000:]
        assert "usage:" in run.stdout


def test_bench_counts_sites_a_full_server_refuses(tmp_path):
    """Against a running server (--url) whose room takes 3 observers: the other sites are
    refused with a clear answer and counted as refused, not as failed; the run goes on
    with the admitted ones."""
    from bench.server import RunningServer

    api_secret = "bench-test-" + "s" * 32
    server = RunningServer(tmp_path, extra=f'[[api.keys]]\nkey = "t"\nsecret = "{api_secret}"\n')
    try:
        import base64
        import urllib.request

        auth = base64.b64encode(f"t:{api_secret}".encode()).decode()
        request = urllib.request.Request(
            server.base_url + "/api/v1/rooms",
            data=json.dumps({"name": "webinar", "max_viewers": 3}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        out = tmp_path / "results"
        run = subprocess.run(
            [sys.executable, "-m", "signaling.cli", "bench", "webinar", "--url", server.base_url,
             "--sites", "6", "--duration", "3", "--connect-timeout", "90", "--out", str(out)],
            cwd=ROOT,
            env=dict(os.environ, TELEBRIDGE_BENCH_SECRET=server.secret),
            capture_output=True,
            text=True,
            timeout=200,
        )  # fmt: skip
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sites"] == 6
    assert summary["sites_connected"] == 4  # the lead and 3 observers
    assert summary["sites_refused"] == 2 and summary["sites_failed"] == 0
    assert summary["sfu_rss_mb"] is None  # not our server: no /proc figures
