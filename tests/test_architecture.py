"""The layering of sfu/ stays visible: no module imports one that imports it back.

Imports under ``if TYPE_CHECKING:`` are for annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

SFU = Path(__file__).resolve().parent.parent / "sfu"


def module_name(path: Path) -> str:
    parts = path.relative_to(SFU.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The sfu modules ``path`` imports when it is loaded (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module in modules:
                    found.add(node.module)
                found.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if f"{node.module}.{a.name}" in modules
                )
            for child in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, child, None)
                if (
                    isinstance(block, list)
                    and block
                    and isinstance(block[0], ast.stmt | ast.excepthandler)
                ):
                    visit([b for b in block if isinstance(b, ast.stmt)])

    visit(tree.body)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SFU.rglob("*.py")}
    modules = set(paths)
    return {name: runtime_imports(path, modules) - {name} for name, path in paths.items()}


def test_sfu_has_no_import_cycle():
    edges = graph()
    assert "sfu.transport" in edges and "sfu.producer" in edges["sfu.transport"], (
        "the graph is read"
    )
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name)


def test_the_protocol_pieces_import_nothing_above_them():
    """ICE, DTLS, SRTP, RTP, RTCP, SDP, NACK, keyframes, codecs and RED are leaves: they know
    nothing of transports, producers, consumers or the worker."""
    edges = graph()
    upper = {
        "sfu.transport",
        "sfu.webrtc_transport",
        "sfu.plain_transport",
        "sfu.producer",
        "sfu.consumer",
    }
    upper |= {"sfu.worker", "sfu.negotiation", "sfu.demux", "sfu.streams", "sfu.router"}
    for leaf in (
        "sfu.ice",
        "sfu.ice_tcp",
        "sfu.dtls",
        "sfu.srtp",
        "sfu.rtp",
        "sfu.rtcp",
        "sfu.sdp",
        "sfu.nack",
        "sfu.keyframe",
        "sfu.codecs",
        "sfu.red",
    ):
        assert not edges[leaf] & upper, f"{leaf} imports {edges[leaf] & upper}"
