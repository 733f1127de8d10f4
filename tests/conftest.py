"""Fixtures: a real Telebridge server (subprocess, real sockets; bench/server.py) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.server import ROOT, RunningServer, free_port
from tests.browser import missing_reason

__all__ = ["ROOT", "RunningServer", "free_port", "server"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Skipped browser tests are easy to miss in a green run: say it loudly at the end."""
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if "browser" in getattr(r, "keywords", {})
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} BROWSER TESTS SKIPPED", red=True, bold=True
        )
        terminalreporter.write_line(missing_reason(), red=True)
        terminalreporter.write_line(
            "As root, `make test` installs them; otherwise: apt-get install chromium chromium-driver",
            red=True,
        )
