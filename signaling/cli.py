"""`telebridge serve` runs the server (`--check` only validates its config); `telebridge
token` mints an access token; `telebridge bench` runs a load scenario (bench/cli.py);
`telebridge recordings list|compose` (recording/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from recording import cli as recordings_cli
from sfu.settings import SettingsError
from signaling import tokens
from signaling.config import Config, ConfigError, load

DEFAULT_CONFIG = "configs/telebridge.toml"


def summary(config: Config) -> str:
    """One line saying what ``serve`` would run, for ``serve --check``."""
    media = config.media
    last = media.base_port + media.workers - 1
    ports = (
        "ephemeral udp ports"
        if not media.base_port
        else f"udp {media.base_port}" + (f"-{last}" if media.workers > 1 else "")
    )
    return (
        f"{config.source or 'built-in defaults'}: ok; http {config.server.host}:{config.server.port}, "
        f"{media.workers} media worker{'s' if media.workers != 1 else ''} on {media.listen} ({ports}, announcing {media.announced}), "
        f"dev tokens {'on' if config.server.dev_tokens else 'off'}, {len(config.api.keys)} API key(s), "
        f"{len(config.webhooks)} webhook(s), log level {config.logging.level}"
    )


def serve(args: argparse.Namespace) -> int:
    config = load(args.config)
    if args.port is not None:
        try:
            config = dataclasses.replace(
                config, server=dataclasses.replace(config.server, port=args.port)
            )
        except SettingsError as exc:
            raise ConfigError(f"--port: {exc}") from None
    if args.check:
        print(summary(config))
        return 0

    from aiohttp import web

    from signaling.app import create_app, handler_args

    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s control %(levelname)s %(name)s: %(message)s",
    )
    if config.server.dev_tokens:
        logging.getLogger("telebridge").warning(
            "the dev token endpoint /dev/token is ON: anyone who reaches this server can mint tokens. "
            "Turn it off (server.dev_tokens = false) in production."
        )
    print(
        f"Telebridge on http://{config.server.host}:{config.server.port}/  (Ctrl-C stops)",
        flush=True,
    )
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        print=None,
        access_log=None,
        loop=loop_factory() if loop_factory else None,
        **handler_args(),
    )
    return 0


def token(args: argparse.Namespace) -> int:
    config = load(args.config)
    ttl = args.ttl if args.ttl is not None else 3600
    if ttl > config.auth.max_token_ttl:
        print(
            f"--ttl is limited to {config.auth.max_token_ttl} s by auth.max_token_ttl",
            file=sys.stderr,
        )
        return 2
    try:
        print(
            tokens.mint(
                config.auth.secret,
                args.room,
                args.identity,
                args.role,
                ttl,
                args.name,
                config.auth.issuer,
            )
        )
    except ValueError as exc:
        print(f"telebridge token: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telebridge", description="Telebridge WebRTC SFU")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the signaling server and its media workers")
    p_serve.add_argument(
        "--config", default=DEFAULT_CONFIG, help="TOML config (default: %(default)s)"
    )
    p_serve.add_argument("--port", type=int, default=None, help="override server.port")
    p_serve.add_argument(
        "--check",
        action="store_true",
        help="validate the config (reading or creating its secret files), print a summary and exit",
    )
    p_serve.set_defaults(func=serve)
    p_token = sub.add_parser("token", help="print an access token signed with the config's secret")
    p_token.add_argument("--config", default=DEFAULT_CONFIG)
    p_token.add_argument("--room", required=True)
    p_token.add_argument("--identity", required=True)
    p_token.add_argument("--role", required=True, choices=tokens.ROLES)
    p_token.add_argument(
        "--ttl", type=int, default=None, help="seconds until expiry (default 3600)"
    )
    p_token.add_argument("--name", default=None, help="display name")
    p_token.set_defaults(func=token)
    recordings_cli.add_parser(sub, DEFAULT_CONFIG)
    from bench.cli import add_parser as add_bench  # light: the load machinery loads on use

    add_bench(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
