"""Telebridge signaling: HTTP API (WHIP/WHEP), access tokens, the demo page."""
