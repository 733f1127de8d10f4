"""The worker's deadline queue (sfu/timers.py): order, re-arming, and no busy loops."""

from __future__ import annotations

from math import inf

from sfu.timers import MIN_STEP, TimerQueue


class Owner:
    def __init__(self, deadlines: list[float], name: str = "") -> None:
        self.deadlines = deadlines  # what next_deadline answers, in turn (the last one sticks)
        self.fired: list[float] = []
        self.name = name

    def on_timer(self, now: float) -> None:
        self.fired.append(now)
        if len(self.deadlines) > 1:
            self.deadlines.pop(0)

    def next_deadline(self) -> float:
        return self.deadlines[0]


def test_owners_fire_in_deadline_order_and_rearm_themselves():
    timers = TimerQueue()
    order: list[str] = []
    a, b = Owner([2.0, 5.0, inf], "a"), Owner([1.0, 3.0, inf], "b")
    for owner in (a, b):
        owner.on_timer = lambda now, o=owner, f=owner.on_timer: (order.append(o.name), f(now))  # type: ignore[method-assign]
        timers.schedule(owner, owner.next_deadline())
    assert timers.deadline == 1.0
    for now in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        timers.run(now)
    assert order == ["b", "a", "b", "a"]
    assert a.fired == [2.0, 5.0] and b.fired == [1.0, 3.0]
    assert timers.deadline == inf and len(timers) == 0


def test_an_earlier_deadline_replaces_a_later_one_and_the_stale_entry_is_skipped():
    timers = TimerQueue()
    owner = Owner([10.0, inf])
    timers.schedule(owner, 10.0)
    timers.schedule(owner, 4.0)  # something new came up
    timers.schedule(owner, 7.0)  # later than what is armed: no change
    assert timers.deadline == 4.0
    assert timers.run(4.0) == 1
    assert timers.run(10.0) == 0, "the stale 10.0 entry must not fire the owner again"
    assert owner.fired == [4.0]


def test_an_owner_whose_deadline_does_not_move_cannot_spin():
    """A deadline that stays in the past (a rounding corner, a bug) fires once per run."""
    timers = TimerQueue()
    stuck = Owner([0.5])
    timers.schedule(stuck, 0.5)
    assert timers.run(1.0) == 1
    assert timers.deadline == 1.0 + MIN_STEP
    assert timers.run(1.0) == 0


def test_a_failing_owner_does_not_stop_the_others():
    timers = TimerQueue()

    class Broken(Owner):
        def on_timer(self, now: float) -> None:
            raise RuntimeError("boom")

    broken, fine = Broken([1.0, 2.0]), Owner([1.0, inf])
    timers.schedule(broken, 1.0)
    timers.schedule(fine, 1.0)
    assert timers.run(1.0) == 2
    assert fine.fired == [1.0]
    assert timers.deadline == 1.0 + MIN_STEP, "the broken owner is still scheduled"


def test_cancel_forgets_an_owner():
    timers = TimerQueue()
    owner = Owner([1.0])
    timers.schedule(owner, 1.0)
    timers.cancel(owner)
    assert timers.run(5.0) == 0 and owner.fired == []
    assert timers.deadline == inf
