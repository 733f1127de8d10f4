"""A real Telebridge server in a subprocess on 127.0.0.1, for the benchmarks and tests.

It lives here rather than in tests/ so that ``python -m bench.fanout`` runs from a plain
install, without pytest; tests/conftest.py re-exports it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from signaling import tokens

ROOT = Path(__file__).resolve().parent.parent  # the checkout: the server runs from it


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RunningServer:
    """One server process with its own config, port and secret; stop() ends it."""

    def __init__(
        self,
        tmp: Path,
        workers: int = 1,
        consent_timeout: float = 30,
        dev_tokens: bool = True,
        extra: str = "",
        host: str = "127.0.0.1",
        config_text: Callable[[int, str], str] | None = None,
    ) -> None:
        """``host``: the address HTTP and media listen on (a test's veth, say); ``extra``:
        more [media] keys, or whole tables after them; ``config_text(port, secret)``:
        the whole config instead (``telebridge bench`` derives it from the embedded one)."""
        self.secret = secrets.token_urlsafe(48)
        self.port = free_port(host)
        self.base_url = f"http://{host}:{self.port}"
        self.config = tmp / "telebridge.toml"
        if config_text is not None:
            self.config.write_text(config_text(self.port, self.secret))
        else:
            self.config.write_text(
                f"""
[server]
host = "{host}"
port = {self.port}
dev_tokens = {"true" if dev_tokens else "false"}
[auth]
secret = "{self.secret}"
[media]
workers = {workers}
listen = "{host}"
announce = "{host}"
base_port = 0
consent_timeout = {consent_timeout}
{extra}
[logging]
level = "INFO"
"""
            )
        self.log = tmp / "server.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("TELEBRIDGE_SECRET", None)
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signaling.cli", "serve", "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log.read_text()}")

    def token(self, room: str, identity: str, role: str, ttl: int = 600) -> str:
        return tokens.mint(self.secret, room, identity, role, ttl)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()
