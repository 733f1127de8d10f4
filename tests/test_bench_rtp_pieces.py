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
