"""Trickle ICE SDP fragments (RFC 8840 section 9, ``application/trickle-ice-sdpfrag``).

A WHIP/WHEP client PATCHes its session with a fragment (RFC 9725 section 4.3): its
candidates (a trickle), or new ``a=ice-ufrag``/``a=ice-pwd`` (an ICE restart), which the
server answers with a fragment of its own. This module only reads and writes fragments;
what they mean for the session is the caller's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_FRAGMENT = 16 * 1024
# RFC 8839 section 5.4: ice-char = ALPHA / DIGIT / "+" / "/"
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")


class FragmentError(ValueError):
    """The fragment is not one we can read; the message says why."""


@dataclass
class Fragment:
    ufrag: str | None = None
    pwd: str | None = None
    media: list[str] = field(default_factory=list)  # the m= lines' values
    mids: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False


def parse(text: str) -> Fragment:
    """Read a fragment: session-level ICE lines, then ``m=`` lines with their ``a=mid``
    and candidates. Attributes a fragment may carry that do not matter to an ICE-lite
    server (ice-options, ice-lite) are skipped; any other line is an error."""
    if len(text) > MAX_FRAGMENT:
        raise FragmentError(f"fragments are limited to {MAX_FRAGMENT} characters")
    fragment = Fragment()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        kind, sep, value = line.partition("=")
        if not sep or len(kind) != 1:
            raise FragmentError(f"line {number} is not an SDP line")
        if kind == "m":
            if len(value.split()) < 4 or len(value) > 256:
                raise FragmentError(f"line {number}: m= needs media, port, proto and a format")
            fragment.media.append(value)  # a section starts; its a=mid names it
            continue
        if kind != "a":
            raise FragmentError(f"line {number}: a fragment has only a= and m= lines")
        name, _, argument = value.partition(":")
        if name in ("ice-ufrag", "ice-pwd"):
            if not _ICE_CHARS.fullmatch(argument) or len(argument) > 256:
                raise FragmentError(f"line {number}: a={name} must be 1-256 ICE characters")
            previous = fragment.ufrag if name == "ice-ufrag" else fragment.pwd
            if previous is not None and previous != argument:
                raise FragmentError(f"line {number}: two different a={name} values")
            if name == "ice-ufrag":
                fragment.ufrag = argument
            else:
                fragment.pwd = argument
        elif name == "mid":
            if not argument or len(argument) > 32 or not argument.isprintable():
                raise FragmentError(f"line {number}: a=mid must be 1-32 printable characters")
            fragment.mids.append(argument)
        elif name == "candidate":
            if len(argument.split()) < 8:
                raise FragmentError(f"line {number}: a=candidate has too few fields")
            fragment.candidates.append(argument)
        elif name == "end-of-candidates":
            fragment.end_of_candidates = True
        elif name in ("ice-options", "ice-lite", "group"):
            continue
        else:
            raise FragmentError(f"line {number}: a={name[:32]} does not belong in a fragment")
    if (fragment.ufrag is None) != (fragment.pwd is None):
        raise FragmentError("a=ice-ufrag and a=ice-pwd come together")
    return fragment


def write(
    ufrag: str, pwd: str, candidate: str, mid: str, media: str = "audio 9 UDP/TLS/RTP/SAVPF 0"
) -> str:
    """The server's answer to an ICE restart: its new credentials and its one candidate
    (RFC 9725 section 4.3.2), in the client's first (bundle-tag) section."""
    lines = [
        "a=ice-lite",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"m={media}",
        f"a=mid:{mid}",
        f"a=candidate:{candidate}",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"
