"""The scenarios of `telebridge bench` as plans (who joins which room, publishing what,
watching whom), and one small `mix` run end to end: sites behind emulated weak links
get their media too, and the results tell their loss apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.scenarios import WEAK_DOWN, build
from bench.server import ROOT


def test_webinar_is_one_publishing_lead_and_observers_on_the_low_layer():
    plan = build("webinar", 50)
    assert plan.total == 50
    (lead,) = plan.publishers
    assert lead.role == "lead" and lead.publishes
    (observers,) = plan.steps
    assert len(observers) == 49
    assert {o.role for o in observers} == {"observer"}
    assert {o.watch for o in observers} == {("lead",)}
    assert {o.max_layer for o in observers} == {"low"}
    assert len({o.identity for o in observers}) == 49
    assert plan.rooms == {"webinar": 49}


def test_consult_lead_and_presenter_watch_each_other_and_observers_watch_both():
    plan = build("consult", 10)
    lead, presenter = plan.publishers
    assert lead.watch == ("presenter",) and presenter.watch == ("lead",)
    assert presenter.role == "participant" and presenter.publishes
    assert {o.watch for o in plan.steps[0]} == {("lead", "presenter")}
    assert plan.total == 10


def test_rooms_and_ramp_and_mix():
    rooms = build("rooms", 20, room_size=5)
    assert len(rooms.publishers) == 4 and len(rooms.rooms) == 4
    assert all(len([o for o in rooms.steps[0] if o.room == r]) == 4 for r in rooms.rooms)
    ramp = build("ramp", 251, step=100)
    assert [len(step) for step in ramp.steps] == [100, 100, 50]
    assert len({o.identity for step in ramp.steps for o in step}) == 250
    mix = build("mix", 41, weak_share=0.25)
    weak = [o for o in mix.steps[0] if o.weak]
    assert len(weak) == 10 and all(o.weak == WEAK_DOWN for o in weak)


def test_bad_plans_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown scenario"):
        build("lecture", 10)
    with pytest.raises(ValueError, match="at least 2"):
        build("webinar", 1)
    with pytest.raises(ValueError, match="weak-share"):
        build("mix", 10, weak_share=0)


def test_mix_sites_behind_weak_links_get_media(tmp_path):
    out = tmp_path / "mix"
    run = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "bench", "mix", "--sites", "6",
         "--weak-share", "0.4", "--duration", "3", "--connect-timeout", "90", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sites_connected"] == summary["sites"] == 6
    # 2 of the 5 observers are behind a link: their loss is reported apart.
    assert summary["loss_pct_weak_links"] is not None
    assert summary["loss_pct_good_links"] is not None
