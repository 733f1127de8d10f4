"""The named scenarios of ``telebridge bench``: who joins which room, publishing what,
watching whom, in which steps. Plain data (:class:`Plan`), built before anything runs.

* ``webinar``: one lead publishing three layers and audio; N observers watching it.
* ``consult``: the lead and a presenting site (a participant) publish and watch each
  other; N observers watch both.
* ``rooms``: N sites in rooms of ``room_size``: in each, a lead publishes and the others
  watch it.
* ``ramp``: a webinar that grows by ``step`` observers at a time up to N, measured after
  each step; it stops at the first step with loss over 1 % or p99 added delay over
  100 ms (the step before is the capacity).
* ``mix``: a webinar where a share of the observers sit behind an emulated weak link
  (bench/linkemu.py: :data:`WEAK_DOWN` toward them, :data:`WEAK_UP` back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCENARIOS = ("webinar", "consult", "rooms", "ramp", "mix")
LOSS_LIMIT_PCT = 1.0
DELAY_P99_LIMIT_MS = 100.0
# A clinic on a poor line: 400 kbit/s toward it with a router's queue, 60 ms each way,
# 10 ms jitter, 1 % random loss; the upstream only slow.
WEAK_DOWN: dict[str, Any] = {"rate": 400_000, "delay": 0.06, "jitter": 0.01, "loss": 0.01}
WEAK_UP: dict[str, Any] = {"delay": 0.06}


@dataclass
class SiteSpec:
    """What one synthetic site does; plain data, so it crosses to a load process."""

    identity: str
    room: str
    role: str  # "lead", "participant", "observer"
    publishes: bool = False
    watch: tuple[str, ...] = ()  # identities whose tracks it subscribes to
    max_layer: str | None = "low"  # its ``preferences``; None leaves the choice to the server
    weak: dict[str, Any] | None = None  # LinkParams fields for its downlink, or None
    weak_up: dict[str, Any] | None = None
    twcc: bool = True  # send transport-cc feedback, as browsers do


@dataclass
class Plan:
    scenario: str
    publishers: list[SiteSpec]
    steps: list[list[SiteSpec]]
    rooms: dict[str, int] = field(default_factory=dict)  # room -> observers it will hold
    description: str = ""

    @property
    def total(self) -> int:
        return len(self.publishers) + sum(len(step) for step in self.steps)


def _observers(
    room: str, count: int, watch: tuple[str, ...], layer: str | None, first: int = 0
) -> list[SiteSpec]:
    return [
        SiteSpec(f"site-{n}", room, "observer", watch=watch, max_layer=layer)
        for n in range(first, first + count)
    ]


def build(
    scenario: str,
    sites: int,
    layer: str | None = "low",
    room_size: int = 5,
    step: int | None = None,
    weak_share: float = 0.2,
    twcc: bool = True,
) -> Plan:
    """The plan of ``scenario`` with ``sites`` sites in all (publishers included, but
    at least one observer). ``layer``: the observers' ``max_layer`` (None: the server's
    choice); ``twcc``: whether the sites send transport-cc feedback."""
    plan = _build(scenario, sites, layer, room_size, step, weak_share)
    for spec in [*plan.publishers, *(s for step_ in plan.steps for s in step_)]:
        spec.twcc = twcc
    return plan


def _build(
    scenario: str,
    sites: int,
    layer: str | None = "low",
    room_size: int = 5,
    step: int | None = None,
    weak_share: float = 0.2,
) -> Plan:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    if sites < 2:
        raise ValueError("--sites: at least 2 (a publisher and an observer)")
    if scenario == "webinar":
        lead = SiteSpec("lead", "webinar", "lead", publishes=True, max_layer=None)
        observers = _observers("webinar", sites - 1, ("lead",), layer)
        return Plan(
            scenario,
            [lead],
            [observers],
            {"webinar": len(observers)},
            f"1 lead publishing 3 layers + audio, {len(observers)} observers over /ws",
        )
    if scenario == "consult":
        if sites < 3:
            raise ValueError("--sites: consult needs at least 3 (lead, presenter, observer)")
        lead = SiteSpec(
            "lead", "consult", "lead", publishes=True, watch=("presenter",), max_layer=layer
        )
        presenter = SiteSpec(
            "presenter", "consult", "participant", publishes=True, watch=("lead",), max_layer=None
        )
        observers = _observers("consult", sites - 2, ("lead", "presenter"), layer)
        return Plan(
            scenario,
            [lead, presenter],
            [observers],
            {"consult": len(observers)},
            f"lead + presenting site (each watching the other), {len(observers)} observers "
            "watching both",
        )
    if scenario == "rooms":
        if room_size < 2:
            raise ValueError("--room-size: at least 2")
        count = max(1, sites // room_size)
        leads = []
        observers = []
        rooms = {}
        for r in range(count):
            room = f"room-{r}"
            leads.append(SiteSpec(f"lead-{r}", room, "lead", publishes=True, max_layer=None))
            observers += _observers(room, room_size - 1, (f"lead-{r}",), layer, r * room_size)
            rooms[room] = room_size - 1
        return Plan(
            scenario,
            leads,
            [observers],
            rooms,
            f"{count} rooms of {room_size} sites: a lead publishing, {room_size - 1} watching",
        )
    if scenario == "ramp":
        size = step or max(10, (sites - 1) // 5)
        lead = SiteSpec("lead", "ramp", "lead", publishes=True, max_layer=None)
        steps = []
        done = 0
        while done < sites - 1:
            count = min(size, sites - 1 - done)
            steps.append(_observers("ramp", count, ("lead",), layer, done))
            done += count
        return Plan(
            scenario,
            [lead],
            steps,
            {"ramp": done},
            f"a webinar growing by {size} observers a step up to {done}, until loss > "
            f"{LOSS_LIMIT_PCT:g} % or p99 added delay > {DELAY_P99_LIMIT_MS:g} ms",
        )
    # mix
    if not 0 < weak_share <= 1:
        raise ValueError("--weak-share: in (0, 1]")
    lead = SiteSpec("lead", "mix", "lead", publishes=True, max_layer=None)
    observers = _observers("mix", sites - 1, ("lead",), layer)
    weak = 0
    for n, site in enumerate(observers):
        if int((n + 1) * weak_share) > int(n * weak_share):  # evenly spread
            site.weak, site.weak_up = dict(WEAK_DOWN), dict(WEAK_UP)
            site.identity = f"weak-{n}"
            weak += 1
    return Plan(
        scenario,
        [lead],
        [observers],
        {"mix": len(observers)},
        f"a webinar of {len(observers)} observers, {weak} of them behind a weak link "
        f"(down {WEAK_DOWN['rate'] // 1000} kbit/s, {WEAK_DOWN['delay'] * 1000:.0f} ms, "
        f"{WEAK_DOWN['loss'] * 100:g} % loss)",
    )
