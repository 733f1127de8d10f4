"""Fixtures: a real Telebridge server (subprocess, real sockets; bench/server.py) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.server import ROOT, RunningServer, free_port

__all__ = ["ROOT", "RunningServer", "free_port", "server"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path)
    try:
        yield running
    finally:
        running.stop()
