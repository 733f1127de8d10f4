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
    result = run_cli(
        "token",
        "--config",
        str(conf),
        "--room",
        "consult",
        "--identity",
        "hue",
        "--role",
        "lead",
        "--ttl",
        "120",
    )
    assert result.returncode == 0, result.stderr
    secret_path = tmp_path / "var" / "secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600, "the generated secret must be private"
    grant = tokens.verify(secret_path.read_text().strip(), result.stdout.strip())
    assert (grant.room, grant.identity, grant.role) == ("consult", "hue", "lead")
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert 110 <= claims["exp"] - claims["iat"] <= 120
    # A second run reuses the same secret rather than making a new one.
    again = run_cli(
        "token",
        "--config",
        str(conf),
        "--room",
        "consult",
        "--identity",
        "hue",
        "--role",
        "observer",
    )
    tokens.verify(secret_path.read_text().strip(), again.stdout.strip())


def test_token_command_refuses_bad_input(tmp_path: Path):
    conf = tmp_path / "telebridge.toml"
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\nmax_token_ttl = 60\n')
    bad_role = run_cli(
        "token", "--config", str(conf), "--room", "r", "--identity", "i", "--role", "admin"
    )
    assert bad_role.returncode != 0 and "invalid choice" in bad_role.stderr
    too_long = run_cli(
        "token",
        "--config",
        str(conf),
        "--room",
        "r",
        "--identity",
        "i",
        "--role",
        "lead",
        "--ttl",
        "3600",
    )
    assert too_long.returncode == 2 and "max_token_ttl" in too_long.stderr
    missing = run_cli(
        "token",
        "--config",
        str(tmp_path / "nope.toml"),
        "--room",
        "r",
        "--identity",
        "i",
        "--role",
        "lead",
    )
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_shipped_configs_load(monkeypatch, tmp_path: Path):
    (tmp_path / "configs").mkdir()
    copy = tmp_path / "configs" / "telebridge.toml"
    copy.write_text((ROOT / "configs" / "telebridge.toml").read_text())
    default = config.load(copy)
    assert (
        default.server.dev_tokens is True
        and default.media.workers == (os.cpu_count() or 1)  # `workers = 0`: one per core
        and default.server.port == 8080
    )
    # Its token secret and demo API key secret are made on first use, readable by us alone.
    assert [k.key for k in default.api.keys] == ["demo"]
    for name in ("secret", "api-secret"):
        assert stat.S_IMODE((tmp_path / "var" / name).stat().st_mode) == 0o600
    assert default.api.keys[0].secret == (tmp_path / "var" / "api-secret").read_text().strip()
    assert config.load(copy).api.keys[0].secret == default.api.keys[0].secret, (
        "made once, then reused"
    )
    monkeypatch.setenv("TELEBRIDGE_SECRET", "s" * 48)
    production = config.load(ROOT / "configs" / "production.example.toml")
    assert production.server.dev_tokens is False, (
        "the production example must not mint tokens for anyone"
    )
    assert production.auth.secret == "s" * 48


def test_broken_config_is_a_clear_error(tmp_path: Path):
    conf = tmp_path / "broken.toml"
    conf.write_text("[media\nworkers = 2\n")
    result = run_cli("serve", "--config", str(conf))
    assert result.returncode == 2 and "broken.toml" in result.stderr
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\n[media]\nworkers = -1\n')
    result = run_cli("serve", "--config", str(conf))
    assert result.returncode == 2 and "workers" in result.stderr


def test_an_unknown_key_stops_serve(tmp_path: Path):
    """A typo is not a silent default: ``workerz = 4`` would have started one worker."""
    conf = tmp_path / "telebridge.toml"
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\n[media]\nworkerz = 4\n')
    result = run_cli("serve", "--config", str(conf))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown key 'workerz' in [media]" in result.stderr and str(conf) in result.stderr
    assert "Telebridge on" not in result.stdout, "it must stop before it listens"


def test_check_passes_the_shipped_configs(tmp_path: Path):
    (tmp_path / "configs").mkdir()
    copy = tmp_path / "configs" / "telebridge.toml"
    copy.write_text((ROOT / "configs" / "telebridge.toml").read_text())
    result = run_cli("serve", "--check", "--config", str(copy))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith(f"{copy}: ok")
    assert (
        "media worker" in result.stdout  # one per core: `workers = 0`
        and "on 127.0.0.1 (udp 40000" in result.stdout
        and "dev tokens on" in result.stdout
    )
    # It reads or creates the secret files as serve would.
    for name in ("secret", "api-secret"):
        assert stat.S_IMODE((tmp_path / "var" / name).stat().st_mode) == 0o600
    production = ROOT / "configs" / "production.example.toml"
    result = run_cli(
        "serve", "--check", "--config", str(production), env={"TELEBRIDGE_SECRET": "s" * 48}
    )
    assert result.returncode == 0, result.stderr
    assert "4 media workers on 0.0.0.0 (udp 40000-40003, announcing 203.0.113.10)" in result.stdout
    assert "dev tokens off" in result.stdout


def test_check_fails_on_a_bad_config(tmp_path: Path):
    conf = tmp_path / "telebridge.toml"
    conf.write_text('[auth]\nsecret_file = "var/secret"\n[ws]\nresume_grace = "20s"\n')
    result = run_cli("serve", "--check", "--config", str(conf))
    assert result.returncode == 2 and result.stdout == ""
    assert "ws.resume_grace must be a number, not '20s'" in result.stderr
    assert not (tmp_path / "var").exists(), "a config with a mistake creates no secret file"
    conf.write_text('[auth]\nsecret = "short"\n')
    result = run_cli("serve", "--check", "--config", str(conf))
    assert result.returncode == 2 and "at least 32" in result.stderr
    conf.write_text('[auth]\nsecret = "' + "x" * 40 + '"\n')
    result = run_cli("serve", "--check", "--config", str(conf), "--port", "70000")
    assert result.returncode == 2 and "--port: port must be 0-65535" in result.stderr
    assert (
        run_cli("serve", "--check", "--config", str(conf), "--port", "9000").stdout.count(
            "127.0.0.1:9000"
        )
        == 1
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_dev_token_endpoint_follows_the_config(tmp_path, enabled):
    server = RunningServer(tmp_path, dev_tokens=enabled)
    try:
        request = urllib.request.Request(
            server.base_url + "/dev/token",
            data=b'{"room":"r","identity":"i","role":"lead"}',
            method="POST",
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
