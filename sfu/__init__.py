"""Telebridge media plane: ICE-lite, DTLS-SRTP and RTP forwarding in media workers."""
