"""The TOML loader: every key is one the dataclasses know, of their type, with their defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sfu.settings import MediaSettings
from signaling import config
from signaling.config import (
    ApiSettings,
    AuthSettings,
    Config,
    ConfigError,
    LoggingSettings,
    RecordingSettings,
    ServerSettings,
    WebhookConfig,
    WsSettings,
)

SECRET = "k" * 40
AUTH = f'[auth]\nsecret = "{SECRET}"\n'
HOOK = f'[[webhooks]]\nurl = "http://127.0.0.1:9000/hook"\nsecret = "{SECRET}"\n'
KEY = f'[[api.keys]]\nkey = "backend"\nsecret = "{SECRET}"\n'


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEBRIDGE_SECRET", raising=False)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "telebridge.toml"
    path.write_text(text)
    return config.load(path)


def error(tmp_path: Path, text: str) -> str:
    """The ConfigError for ``text``, given a valid [auth] secret unless it has an [auth]."""
    if "[auth]" not in text:
        text = AUTH + text
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


# -- defaults ------------------------------------------------------------------------------------


def test_empty_tables_give_the_dataclass_defaults(tmp_path: Path):
    loaded = load(tmp_path, AUTH + "[server]\n[media]\n[logging]\n[api]\n[ws]\n")
    assert loaded.media == MediaSettings()
    assert (loaded.server, loaded.logging, loaded.api, loaded.ws, loaded.webhooks) == (
        ServerSettings(),
        LoggingSettings(),
        ApiSettings(),
        WsSettings(),
        (),
    )
    assert loaded.auth == AuthSettings(secret=SECRET)
    assert loaded == dataclasses.replace(
        Config(),
        auth=AuthSettings(secret=SECRET),
        source=tmp_path / "telebridge.toml",
        recording=RecordingSettings(root=str(tmp_path / "recordings")),  # beside the config
    )


def test_the_recording_table(tmp_path: Path):
    loaded = load(tmp_path, AUTH + '[recording]\nroot = "/srv/rec"\nretention_days = 30\n')
    assert loaded.recording == RecordingSettings(root="/srv/rec", retention_days=30)
    for bad, message in (
        ("retention_days = -1", "retention_days"),
        ('root = ""', "root"),
        ("enabled = 1", "enabled"),
        ("days = 3", "unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            load(tmp_path, AUTH + f"[recording]\n{bad}\n")


def test_missing_tables_are_the_defaults_too(tmp_path: Path):
    assert load(tmp_path, AUTH) == load(
        tmp_path, AUTH + "[server]\n[media]\n[logging]\n[api]\n[ws]\n"
    )


def test_an_entry_takes_its_defaults_from_its_dataclass(tmp_path: Path):
    hook = load(tmp_path, AUTH + HOOK).webhooks[0]
    assert hook == WebhookConfig(url="http://127.0.0.1:9000/hook", secret=SECRET)
    assert (hook.max_attempts, hook.timeout, hook.queue_size, hook.events) == (6, 10.0, 1000, None)


def test_values_are_read_into_their_tables(tmp_path: Path):
    loaded = load(
        tmp_path,
        AUTH
        + 'issuer = "clinic"\nmax_token_ttl = 600\n'
        + '[server]\nhost = "0.0.0.0"\nport = 9000\ndev_tokens = true\ncors_origins = ["https://a.example"]\n'
        + '[media]\nworkers = 3\nlisten = "0.0.0.0"\nannounce = "203.0.113.10"\nbase_port = 41000\n'
        + "publisher_bitrate = 1000000\nconsent_timeout = 15\nkeyframe_interval = 1\nreport_interval = 0.5\n"
        + "[ws]\njoin_limit = 0\nforwarded_for = true\nresume_grace = 5\n"
        + "[api]\nmetrics_auth = true\n"
        + KEY,
    )
    assert loaded.server == ServerSettings(
        host="0.0.0.0", port=9000, dev_tokens=True, cors_origins=("https://a.example",)
    )
    assert (loaded.auth.issuer, loaded.auth.max_token_ttl) == ("clinic", 600)
    assert loaded.media == MediaSettings(
        workers=3,
        listen="0.0.0.0",
        announce="203.0.113.10",
        base_port=41000,
        publisher_bitrate=1_000_000,
        consent_timeout=15.0,
        keyframe_interval=1.0,
        report_interval=0.5,
    )
    assert isinstance(loaded.media.consent_timeout, float), (
        "an integer in a float's place is read as a float"
    )
    assert loaded.ws == WsSettings(join_limit=0, forwarded_for=True, resume_grace=5.0)
    assert loaded.api.metrics_auth is True and [k.key for k in loaded.api.keys] == ["backend"]


def test_the_logging_level_is_the_workers_level(tmp_path: Path):
    loaded = load(tmp_path, AUTH + '[logging]\nlevel = "DEBUG"\n')
    assert loaded.logging.level == loaded.media.log_level == "DEBUG"
    assert Config(logging=LoggingSettings("WARNING")).media.log_level == "WARNING", (
        "one source, however Config is built"
    )
    assert MediaSettings.from_json(loaded.media.to_json()).log_level == "DEBUG", (
        "what the workers are handed"
    )


# -- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, table",
    [
        ("[server]\nprot = 8080\n", "[server]"),
        (AUTH + "secrett = 1\n", "[auth]"),
        ("[media]\nworkerz = 4\n", "[media]"),
        ('[logging]\nlevle = "INFO"\n', "[logging]"),
        ("[api]\nmetrics_auht = true\n", "[api]"),
        (KEY + "creat = true\n", "[[api.keys]] (api.keys[0])"),
        (HOOK + HOOK + "max_attempt = 3\n", "[[webhooks]] (webhooks[1])"),
        ("[ws]\njoin_limt = 3\n", "[ws]"),
    ],
    ids=["server", "auth", "media", "logging", "api", "api.keys", "webhooks", "ws"],
)
def test_an_unknown_key_is_an_error_naming_it_and_its_table(tmp_path: Path, text: str, table: str):
    message = error(tmp_path, text)
    key = next(line.split(" =")[0] for line in reversed(text.splitlines()) if " = " in line)
    assert f"unknown key {key!r} in {table}" in message
    assert str(tmp_path / "telebridge.toml") in message


def test_no_secret_file_is_made_for_a_config_with_a_mistake(tmp_path: Path):
    error(tmp_path, '[auth]\nsecret_file = "var/secret"\n[media]\nworkerz = 4\n')
    assert not (tmp_path / "var").exists()


def test_an_unknown_table_is_an_error(tmp_path: Path):
    assert "unknown table [medai]" in error(tmp_path, "[medai]\nworkers = 2\n")
    assert "unknown top-level key 'port'" in error(tmp_path, "port = 8080\n" + AUTH)
    assert "unknown table [[webhook]]" in error(tmp_path, '[[webhook]]\nurl = "http://x/"\n')


def test_the_worker_level_is_set_under_logging_not_media(tmp_path: Path):
    message = error(tmp_path, '[media]\nlog_level = "DEBUG"\n')
    assert "unknown key 'log_level' in [media]" in message and "[logging] level" in message


def test_an_unknown_media_key_lists_the_keys_that_are_known(tmp_path: Path):
    message = error(tmp_path, "[media]\nworkerz = 4\n")
    assert "workers" in message and "log_level" not in message, "log_level is not a [media] key"


# -- wrong types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[server]\nport = "8080"\n', "server.port must be an integer, not '8080'"),
        (
            '[server]\ndev_tokens = "false"\n',
            "server.dev_tokens must be true or false, not 'false'",
        ),
        ("[server]\ncors_origins = [1]\n", "server.cors_origins must be a list of strings"),
        ("[media]\nworkers = 1.5\n", "media.workers must be an integer, not 1.5"),
        ("[media]\nworkers = -1\n", "workers must be 0 (one per core) or more"),
        ("[media]\nconsent_timeout = true\n", "media.consent_timeout must be a number, not True"),
        ("[media]\nlisten = 127\n", "media.listen must be a string, not 127"),
        ("[ws]\nforwarded_for = 1\n", "ws.forwarded_for must be true or false, not 1"),
        ("[logging]\nlevel = 10\n", "logging.level must be a string, not 10"),
        (AUTH + 'max_token_ttl = "1d"\n', "auth.max_token_ttl must be an integer, not '1d'"),
        (
            HOOK + 'events = "room_ended"\n',
            "webhooks[0].events must be a list of strings, not 'room_ended'",
        ),
        ("[[api.keys]]\nkey = 7\n", "api.keys[0].key must be a string, not 7"),
        ("[[api.keys]]\ncreate = true\n", "missing key 'key' in [[api.keys]] (api.keys[0])"),
        ("[[webhooks]]\nevents = []\n", "missing key 'url' in [[webhooks]] (webhooks[0])"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_key(
    tmp_path: Path, text: str, expected: str
):
    assert expected in error(tmp_path, text)


def test_a_secret_of_the_wrong_type_is_not_repeated(tmp_path: Path):
    message = error(tmp_path, "[auth]\nsecret = 123456789012345678901234567890123\n")
    assert "auth.secret must be a string" in message and "123456789" not in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[logging]\nlevel = "LOUD"\n', "[logging] level must be one of"),
        ("[ws]\njoin_limit = -1\n", "[ws] join_limit must be 0"),
        ("[ws]\nidentity_join_limit = -1\n", "[ws] identity_join_limit must be 0"),
        ("[ws]\nresume_grace = nan\n", "[ws] resume_grace must be positive"),
        (AUTH + "max_token_ttl = 0\n", "[auth] max_token_ttl must be positive"),
        ("[media]\nbase_port = 65535\nworkers = 2\n", "[media] base_port + workers - 1"),
        ("[server]\nport = -1\n", "[server] port must be 0-65535"),
    ],
)
def test_a_value_out_of_range_names_the_key(tmp_path: Path, text: str, expected: str):
    assert expected in error(tmp_path, text)


def test_lowercase_logging_level_is_accepted(tmp_path: Path):
    assert load(tmp_path, AUTH + '[logging]\nlevel = "debug"\n').media.log_level == "debug"


def test_an_unreadable_config_is_a_config_error(tmp_path: Path):
    (tmp_path / "adir.toml").mkdir()
    with pytest.raises(ConfigError, match="adir.toml"):
        config.load(tmp_path / "adir.toml")
