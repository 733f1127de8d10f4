"""Access tokens (HS256 JWT) and the configuration that holds their key."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling import config, tokens

SECRET = "k" * 64
OTHER = "o" * 64


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": "telebridge",
        "sub": "dr-lee",
        "room": "consult",
        "role": "lead",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def raw(payload: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", tokens.ROLES)
def test_mint_verify_round_trip(role):
    token = tokens.mint(SECRET, "consult", "dr-lee", role, ttl=600, name="Dr Lee")
    grant = tokens.verify(SECRET, token)
    assert (grant.room, grant.identity, grant.role, grant.name) == (
        "consult",
        "dr-lee",
        role,
        "Dr Lee",
    )
    assert abs(grant.expires - (time.time() + 600)) < 5
    assert grant.can_publish == (role in ("lead", "participant"))


def test_name_defaults_to_identity():
    assert tokens.verify(SECRET, tokens.mint(SECRET, "r", "site-1", "observer")).name == "site-1"


def test_tampered_payload_is_rejected():
    token = tokens.mint(SECRET, "consult", "site-1", "observer")
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["role"] = "lead"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with pytest.raises(tokens.TokenError, match="invalid"):
        tokens.verify(SECRET, f"{header}.{forged}.{signature}")


def test_tampered_signature_is_rejected():
    token = tokens.mint(SECRET, "consult", "site-1", "observer")
    head, _, signature = token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, f"{head}.{flipped}")


def test_wrong_key_is_rejected():
    with pytest.raises(tokens.TokenError, match="invalid"):
        tokens.verify(OTHER, tokens.mint(SECRET, "consult", "site-1", "observer"))


def test_wrong_issuer_is_rejected():
    token = tokens.mint(SECRET, "consult", "site-1", "observer", issuer="someone-else")
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, token)
    assert tokens.verify(SECRET, token, issuer="someone-else").identity == "site-1"


def test_expired_token_is_rejected():
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(SECRET, raw(claims(exp=int(time.time()) - 60)))


def test_leeway_is_only_a_few_seconds():
    assert tokens.verify(SECRET, raw(claims(exp=int(time.time()) - 2))).identity == "dr-lee"
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, raw(claims(exp=int(time.time()) - 10)))


def test_not_yet_valid_token_is_rejected():
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, raw(claims(nbf=int(time.time()) + 120)))


@pytest.mark.parametrize("missing", ["exp", "sub", "iss", "room", "role"])
def test_missing_claim_is_rejected(missing):
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, raw(claims(**{missing: None})))


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "admin"},
        {"role": ["lead"]},
        {"room": 7},
        {"room": ""},
        {"sub": ""},
        {"exp": "tomorrow"},
    ],
    ids=["unknown-role", "role-list", "room-number", "empty-room", "empty-sub", "exp-text"],
)
def test_bad_claim_values_are_rejected(bad):
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, raw(claims(**bad)))


def test_other_algorithms_are_refused():
    unsigned = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, unsigned)
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, raw(claims(), algorithm="HS512"))


def test_mint_refuses_bad_arguments():
    with pytest.raises(ValueError, match="role"):
        tokens.mint(SECRET, "r", "i", "admin")
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "", "i", "lead")
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "r", "", "lead")
    with pytest.raises(ValueError):
        tokens.mint(SECRET, "r", "i", "lead", ttl=0)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.from_regex(r"[A-Za-z0-9_=-]{0,40}\.[A-Za-z0-9_=-]{0,80}\.[A-Za-z0-9_=-]{0,60}"),
    )
)
def test_garbage_tokens_raise_only_token_error(text):
    with pytest.raises(tokens.TokenError):
        tokens.verify(SECRET, text)


# -- configuration -----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "telebridge.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch):
    monkeypatch.delenv("TELEBRIDGE_SECRET", raising=False)


def test_config_creates_secret_file_with_mode_0600(tmp_path):
    path = write(tmp_path, '[auth]\nsecret_file = "var/secret"\n')
    first = config.load(path)
    secret_file = tmp_path / "var" / "secret"
    assert secret_file.exists() and (secret_file.stat().st_mode & 0o777) == 0o600
    assert len(first.auth.secret) >= 32
    assert config.load(path).auth.secret == first.auth.secret, "the key survives restarts"


AUTH = f'[auth]\nsecret = "{SECRET}"\n'


@pytest.mark.parametrize(
    "text",
    [
        '[auth]\nsecret = "short"\n',
        AUTH + "[server]\nport = 70000\n",
        AUTH + "[media]\nconsent_timeout = 0\n",
        AUTH + "[media]\nworkers = -1\n",
        AUTH + "[media]\npublisher_bitrate = -1\n",
        'server = "not a table"\n' + AUTH,
        AUTH + '[server]\ncors_origins = "*"\n',
        AUTH + '[server]\nport = "eighty"\n',
        AUTH + "[server\n",
    ],
    ids=[
        "short-secret",
        "port-range",
        "consent-zero",
        "no-workers",
        "negative-bitrate",
        "server-not-table",
        "cors-not-list",
        "port-text",
        "toml-syntax",
    ],
)
def test_bad_config_raises_config_error(tmp_path, text):
    with pytest.raises(config.ConfigError):
        config.load(write(tmp_path, text))


def test_good_config_loads(tmp_path):
    loaded = config.load(
        write(tmp_path, AUTH + '[server]\nport = 8443\ncors_origins = ["https://a.example"]\n')
    )
    assert (loaded.auth.secret, loaded.server.port, loaded.server.cors_origins) == (
        SECRET,
        8443,
        ("https://a.example",),
    )


def test_short_env_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TELEBRIDGE_SECRET", "tooshort")
    with pytest.raises(config.ConfigError, match="TELEBRIDGE_SECRET"):
        config.load(write(tmp_path, "[server]\n"))
    with pytest.raises(config.ConfigError):
        config.load(None)


def test_unreadable_secret_path_is_a_config_error(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(config.ConfigError, match="secret"):
        config.load(write(tmp_path, '[auth]\nsecret_file = "adir"\n'))


def test_missing_config_file(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")
