"""A room on one worker: the producers its consumers may be made from (mediasoup's Router).

Transports (and the consumers on them) belong to the worker; a room only needs to know
which producers exist in it, so that a consumer is never made across rooms.
"""

from __future__ import annotations

from sfu.producer import Producer


class Router:
    def __init__(self, room: str) -> None:
        self.room = room
        self.producers: dict[str, Producer] = {}

    def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.on_close.append(self._producer_closed)

    def _producer_closed(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)
