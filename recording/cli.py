"""``telebridge recordings list`` and ``telebridge recordings compose <id> -o out.mp4``:
offline, on the recordings folder of the server's config (no server needed)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def add_parser(sub: Any, default_config: str) -> None:
    p = sub.add_parser("recordings", help="list recordings, or compose a teaching video")
    p.add_argument("--config", default=default_config)
    commands = p.add_subparsers(dest="recordings_command", required=True)
    p_list = commands.add_parser("list", help="every recording in [recording] root")
    p_list.add_argument("--room", default=None)
    p_list.set_defaults(func=list_recordings)
    p_compose = commands.add_parser("compose", help="render one H.264 + AAC MP4")
    p_compose.add_argument(
        "id", help='the recording\'s id (an older id that starts with "-" goes after "--")'
    )
    p_compose.add_argument("-o", "--output", required=True)
    p_compose.set_defaults(func=compose)


def _root(args: argparse.Namespace) -> Path:
    from signaling.config import load

    return Path(load(args.config).recording.root)


def _manifests(root: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            print(f"(unreadable: {path})", file=sys.stderr)
    return sorted(found, key=lambda m: m.get("started_at", 0))


def list_recordings(args: argparse.Namespace) -> int:
    rows = [m for m in _manifests(_root(args)) if args.room in (None, m.get("room"))]
    if not rows:
        print("no recordings")
        return 0
    print(
        f"{'id':18} {'room':20} {'state':9} {'started (UTC)':20} {'length':>8} {'files':>5} {'MB':>8}"
    )
    for m in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.get("started_at", 0)))
        length = (m.get("stopped_at") or m.get("started_at", 0)) - m.get("started_at", 0)
        size = sum(f.get("size", 0) for f in m.get("files", [])) / 1e6
        print(
            f"{m['id']:18} {m['room']:20} {m['state']:9} {started:20} {length:7.1f}s "
            f"{len(m.get('files', [])):5} {size:8.2f}"
        )
    return 0


def compose(args: argparse.Namespace) -> int:
    from recording.compose import ComposeError
    from recording.compose import compose as render

    folder = _root(args) / args.id
    if not (folder / MANIFEST).is_file() or "/" in args.id or args.id.startswith("."):
        print(
            f"telebridge recordings: no recording {args.id!r} in {folder.parent}", file=sys.stderr
        )
        return 2
    started = time.monotonic()

    def progress(done: float, total: float) -> None:
        width = 30
        filled = int(width * min(done / total, 1.0))
        sys.stderr.write(
            f"\rcomposing [{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}% "
            f"{done:6.1f}/{total:.1f} s"
        )
        sys.stderr.flush()

    try:
        result = render(folder, Path(args.output), progress)
    except ComposeError as exc:
        print(f"\ntelebridge recordings: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write("\n")
    print(
        f"{args.output}: {result['duration']:.1f} s, lead {result['lead']}, "
        f"beside: {', '.join(result['others']) or 'nobody'} ({time.monotonic() - started:.1f} s)"
    )
    return 0
