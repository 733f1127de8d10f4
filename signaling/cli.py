"""`telebridge serve` runs the server; `telebridge token` mints an access token."""

from __future__ import annotations

import argparse
import logging
import sys

from signaling import tokens
from signaling.config import ConfigError, load

DEFAULT_CONFIG = "configs/telebridge.toml"


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from signaling.app import create_app

    config = load(args.config)
    if args.port is not None:
        config.http_port = args.port
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s control %(levelname)s %(name)s: %(message)s",
    )
    if config.dev_tokens:
        logging.getLogger("telebridge").warning(
            "the dev token endpoint /dev/token is ON: anyone who reaches this server can mint tokens. "
            "Turn it off (server.dev_tokens = false) in production."
        )
    print(f"Telebridge on http://{config.http_host}:{config.http_port}/  (Ctrl-C stops)", flush=True)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    web.run_app(
        create_app(config),
        host=config.http_host,
        port=config.http_port,
        print=None,
        access_log=None,
        loop=loop_factory() if loop_factory else None,
    )
    return 0


def token(args: argparse.Namespace) -> int:
    config = load(args.config)
    ttl = args.ttl if args.ttl is not None else 3600
    if ttl > config.max_token_ttl:
        print(f"--ttl is limited to {config.max_token_ttl} s by auth.max_token_ttl", file=sys.stderr)
        return 2
    try:
        print(tokens.mint(config.jwt_secret, args.room, args.identity, args.role, ttl, args.name, config.token_issuer))
    except ValueError as exc:
        print(f"telebridge token: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telebridge", description="Telebridge WebRTC SFU")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the signaling server and its media workers")
    p_serve.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config (default: %(default)s)")
    p_serve.add_argument("--port", type=int, default=None, help="override server.port")
    p_serve.set_defaults(func=serve)
    p_token = sub.add_parser("token", help="print an access token signed with the config's secret")
    p_token.add_argument("--config", default=DEFAULT_CONFIG)
    p_token.add_argument("--room", required=True)
    p_token.add_argument("--identity", required=True)
    p_token.add_argument("--role", required=True, choices=tokens.ROLES)
    p_token.add_argument("--ttl", type=int, default=None, help="seconds until expiry (default 3600)")
    p_token.add_argument("--name", default=None, help="display name")
    p_token.set_defaults(func=token)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
