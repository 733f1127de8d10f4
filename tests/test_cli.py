"""The command line and configuration as an operator uses them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from signaling import config, tokens
from tests.conftest import ROOT, RunningServer


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "signaling.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
        timeout=60,
    )


def test_token_command_uses_the_config_secret_file(tmp_path: Path):
    conf = tmp_path / "conf" / "telebridge.toml"
    conf.parent.mkdir()
    conf.write_text('[auth]\nsecret_file = "../var/secret"\n')
    result = run_cli("token", "--config", str(conf), "--room", "consult", "--identity", "hue", "--role", "lead", "--ttl", "120")
    assert result.returncode == 0, result.stderr
    secret_path = tmp_path / "var" / "secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600, "the generated secret must be private"
    grant = tokens.verify(secret_path.read_text().strip(), result.stdout.strip())
    assert (grant.room, grant.identity, grant.role) == ("consult", "hue", "lead")
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert 110 <= claims["exp"] - claims["iat"] <= 120
    # A second run reuses the same secret rather than making a new one.
    again = run_cli("token", "--config", str(conf), "--room", "consult", "--identity", "hue", "--role", "observer")
    tokens.verify(secret_path.read_text().strip(), again.stdout.strip())


def test_token_command_refuses_bad_input(tmp_path: Path):
    conf = tmp_path / "telebridge.toml"
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\nmax_token_ttl = 60\n')
    bad_role = run_cli("token", "--config", str(conf), "--room", "r", "--identity", "i", "--role", "admin")
    assert bad_role.returncode != 0 and "invalid choice" in bad_role.stderr
    too_long = run_cli("token", "--config", str(conf), "--room", "r", "--identity", "i", "--role", "lead", "--ttl", "3600")
    assert too_long.returncode == 2 and "max_token_ttl" in too_long.stderr
    missing = run_cli("token", "--config", str(tmp_path / "nope.toml"), "--room", "r", "--identity", "i", "--role", "lead")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_shipped_configs_load(monkeypatch, tmp_path: Path):
    (tmp_path / "configs").mkdir()
    copy = tmp_path / "configs" / "telebridge.toml"
    copy.write_text((ROOT / "configs" / "telebridge.toml").read_text())
    default = config.load(copy)
    assert default.dev_tokens is True and default.workers == 1 and default.http_port == 8080
    # Its token secret and demo API key secret are made on first use, readable by us alone.
    assert [k.key for k in default.api_keys] == ["demo"]
    for name in ("secret", "api-secret"):
        assert stat.S_IMODE((tmp_path / "var" / name).stat().st_mode) == 0o600
    assert default.api_keys[0].secret == (tmp_path / "var" / "api-secret").read_text().strip()
    assert config.load(copy).api_keys[0].secret == default.api_keys[0].secret, "made once, then reused"
    monkeypatch.setenv("TELEBRIDGE_SECRET", "s" * 48)
    production = config.load(ROOT / "configs" / "production.example.toml")
    assert production.dev_tokens is False, "the production example must not mint tokens for anyone"
    assert production.jwt_secret == "s" * 48


def test_broken_config_is_a_clear_error(tmp_path: Path):
    conf = tmp_path / "broken.toml"
    conf.write_text("[media\nworkers = 2\n")
    result = run_cli("serve", "--config", str(conf))
    assert result.returncode == 2 and "broken.toml" in result.stderr
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\n[media]\nworkers = 0\n')
    result = run_cli("serve", "--config", str(conf))
    assert result.returncode == 2 and "workers" in result.stderr


@pytest.mark.parametrize("enabled", [True, False])
def test_dev_token_endpoint_follows_the_config(tmp_path, enabled):
    server = RunningServer(tmp_path, dev_tokens=enabled)
    try:
        request = urllib.request.Request(
            server.base_url + "/dev/token", data=b'{"room":"r","identity":"i","role":"lead"}', method="POST"
        )
        if enabled:
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        else:
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=5)
            assert error.value.code == 404
    finally:
        server.stop()
