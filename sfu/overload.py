"""Whether a worker is behind: its event loop late or its receive queue filling.

A worker that cannot keep up delays every packet it forwards, and each viewer's bandwidth
estimator reads that self-made delay as congestion on its own link. Left alone, every
viewer then probes to recover, and the padding adds to the overload (measured: 62k padding
packets in 20 s at 2,000 sites). So the worker's load reports feed this small state
machine, which the layer controllers (no probing while overloaded, nor while the last
report put the worker at its CPU line: ``busy``) and admission control (no new sessions)
read.

Sans-I/O: ``update`` takes one load report's figures. A lone late timer (a GC pause, a
burst of handshakes) is not overload: it takes ``confirm`` reports in a row over a
threshold to enter, and as many under half of both to leave.
"""

from __future__ import annotations

# Seconds between a worker's load reports. Each report's CPU figures cover the last
# LOAD_WINDOW; reports come twice as often so that a join waiting for one (signaling's
# JOIN_WAIT) sees one within a second whenever it arrives.
LOAD_INTERVAL = 0.5
LOAD_WINDOW = 1.0
MAX_LAG = 0.2  # seconds the loop runs late: media is already delayed that much
MAX_QUEUE = 512 * 1024  # bytes waiting in the UDP receive queue
CONFIRM = 6  # load reports in a row (3 s)


class Overload:
    """One worker's overload state, from its load reports."""

    __slots__ = (
        "max_lag",
        "max_queue",
        "confirm",
        "overloaded",
        "busy",
        "_over",
        "_under",
        "episodes",
    )

    def __init__(
        self, max_lag: float = MAX_LAG, max_queue: int = MAX_QUEUE, confirm: int = CONFIRM
    ) -> None:
        self.max_lag = max_lag
        self.max_queue = max_queue
        self.confirm = confirm
        self.overloaded = False
        self.busy = False  # the last report's demand was at the line: no new probes
        self.episodes = 0  # how many times it entered overload (for logs and tests)
        self._over = 0
        self._under = 0

    def update(self, loop_lag: float, queue_bytes: int, busy: bool = False) -> bool:
        """One load report (``busy``: the worker used and waited for as much of a core as
        admission control allows, ``[media] admission_max_cpu``); returns whether the
        worker is overloaded now.

        A busy worker has no room for padding: its viewers' estimators read its queueing
        as congestion, and 221 observers capped at the lowest layer were sent 18k padding
        packets in 20 s (a sixteenth of their media) by a worker at that line, not behind
        yet."""
        self.busy = busy
        over = loop_lag > self.max_lag or queue_bytes > self.max_queue
        under = loop_lag < self.max_lag / 2 and queue_bytes < self.max_queue / 2
        self._over = self._over + 1 if over else 0
        self._under = self._under + 1 if under else 0
        if not self.overloaded and self._over >= self.confirm:
            self.overloaded = True
            self.episodes += 1
        elif self.overloaded and self._under >= self.confirm:
            self.overloaded = False
        return self.overloaded
