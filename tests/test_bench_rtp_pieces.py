"""Micro-benchmarks of per-packet RTP bookkeeping (run with --benchmark-enable)."""

from __future__ import annotations

from sfu.nack import NackGenerator, RetransmissionBuffer

BATCH = 10_000


def test_bench_nack_generator_in_order(benchmark):
    gen = NackGenerator()
    state = {"seq": 0}

    def run() -> None:
        on_packet = gen.on_packet
        seq = state["seq"]
        for _ in range(BATCH):
            seq = (seq + 1) & 0xFFFF
            on_packet(seq, 1.0)
        state["seq"] = seq

    benchmark(run)
    assert gen.missing_count == 0
    assert gen.due(2.0) == []


def test_bench_retransmission_buffer_store(benchmark):
    buf = RetransmissionBuffer()
    packet = object()
    state = {"seq": 0}

    def run() -> None:
        store = buf.store
        seq = state["seq"]
        for _ in range(BATCH):
            seq = (seq + 1) & 0xFFFF
            store(seq, packet, 1.0)
        state["seq"] = seq

    benchmark(run)
    last = state["seq"]
    assert buf.get(last, 1.0) is packet
    assert buf.get((last - 1024) & 0xFFFF, 1.0) is None


def test_bench_transport_cc_feedback_into_the_estimator(benchmark):
    """What one observer's transport-cc costs the worker: a feedback every 100 ms for the
    ~7 packets (audio + low layer) it got meanwhile, into GCC. At 500 observers that is
    5,000 feedbacks a second per server."""
    from sfu.bwe import BandwidthEstimator

    feedbacks = []
    sent = 0.0
    for f in range(FEEDBACKS):
        batch = []
        for i in range(7):
            sent += 0.0143
            arrived = None if (f * 7 + i) % 50 == 0 else sent + 0.03 + 0.001 * ((f + i) % 3)
            batch.append((sent, 200 if i % 3 else 1100, arrived))
        feedbacks.append((batch, sent + 0.04))
    made: list[BandwidthEstimator] = []

    def fresh() -> tuple[tuple[BandwidthEstimator], dict]:
        made.append(BandwidthEstimator())
        return (made[-1],), {}

    def run(estimator: BandwidthEstimator) -> None:
        on_packets = estimator.on_packets
        for batch, now in feedbacks:
            on_packets(batch, now)

    benchmark.pedantic(run, setup=fresh, rounds=10)
    estimator = made[-1]
    assert estimator.detector.state == "normal"
    assert 0.01 < estimator.loss < 0.04
    acked = estimator.acked_rate_bps
    assert acked is not None and 200_000 < acked < 400_000


FEEDBACKS = 1000
