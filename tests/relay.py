"""A UDP relay between a client and the SFU that drops a share of the media packets.

It stands in for a lossy island or mountain link: the link emulator (bench/linkemu.py)
with random loss in one direction only. STUN and DTLS handshakes pass untouched (losing
one only slows the start).
"""

from __future__ import annotations

from bench.linkemu import Address, LinkEmulator, LinkParams


class LossyRelay(LinkEmulator):
    """``loss`` applies toward the client (downlink) or, with ``uplink=True``, toward the SFU."""

    def __init__(
        self,
        server: Address,
        loss: float,
        seed: int = 7,
        uplink: bool = False,
        spare_payload_types: frozenset[int] = frozenset(),
    ) -> None:
        lossy = LinkParams(loss=loss, spare_payload_types=spare_payload_types)
        if uplink:
            super().__init__(server, down=LinkParams(), up=lossy, seed=seed)
        else:
            super().__init__(server, down=lossy, up=LinkParams(), seed=seed)
        self.uplink = uplink
        self.lossy = self.up if uplink else self.down

    @property
    def spare(self) -> frozenset[int]:
        """RTP payload types never dropped: a test of the SFU's repair can spare
        retransmissions, whose second loss only the client's own NACK policy can repair."""
        return self.lossy.params.spare_payload_types

    @spare.setter
    def spare(self, payload_types: frozenset[int]) -> None:
        self.update("up" if self.uplink else "down", spare_payload_types=payload_types)

    @property
    def dropped(self) -> int:
        return self.lossy.counters.dropped_loss

    @property
    def forwarded(self) -> int:
        return self.down.counters.packets_out + self.up.counters.packets_out
