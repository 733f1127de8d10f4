"""`python -m bench.floor`: the bare SRTP + UDP floor the capacity figures are read against.

It asserts what a reader of its output relies on: the packets really went through SRTP
both ways (every one that arrived authenticated with its receiver's key), and the
projection is the per-packet costs times the sites' packets. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.server import ROOT


def test_floor_sends_srtp_to_every_receiver_and_projects_the_cores(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    args = ["--sites", "100", "--receivers", "20", "--rate", "2000", "--seconds", "1"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.floor", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["rate_sent"] > 0 and result["send_failed"] == 0
    assert result["loss_pct"] < 100, "no packet reached the receivers"
    assert result["unprotect_failed"] == 0, "packets arrived that did not authenticate"
    packets = result["sites"] * result["site_pps"]
    assert result["sfu_cores_floor"] == round(packets * result["send_us_per_pkt"] / 1e6, 2)
    assert result["load_cores_floor"] == round(packets * result["receive_us_per_pkt"] / 1e6, 2)
    assert "100 sites x 70 pkt/s need at least" in run.stdout


def test_floor_refuses_a_receiver_that_decrypts_nothing() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--unprotect-every", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--unprotect-every must be 1 or more" in run.stderr
