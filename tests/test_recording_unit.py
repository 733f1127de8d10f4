"""The recorder's sans-I/O pieces (recording/timing.py, recording/recorder.py) and its
writer, with real VP8 payloads from aiortc's encoder and time passed in."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from recording.recorder import TrackRecorder, TrackSpec
from recording.timing import NTP_EPOCH_OFFSET, Clock, ReorderBuffer, Unwrap
from recording.writer import TrackWriter
from sfu import rtcp

SSRC = 0x1234


def test_unwrap_extends_across_wrap_and_keeps_late_packets_behind() -> None:
    unwrap = Unwrap(16)
    assert [unwrap(v) for v in (65534, 65535, 0, 1, 65535, 2)] == [
        65534,
        65535,
        65536,
        65537,
        65535,
        65538,
    ]


def test_reorder_buffer_orders_and_gives_up_on_a_lost_packet_after_its_delay() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(delay=0.1)
    buffer.push(1, "a", 0.0)
    assert buffer.pop(0.0) == [(1, "a", False)]
    buffer.push(3, "c", 0.01)
    buffer.push(2, "b", 0.02)  # late but within the delay: reordered
    assert buffer.pop(0.02) == [(2, "b", False), (3, "c", False)]
    buffer.push(5, "e", 0.03)  # 4 is lost
    assert buffer.pop(0.05) == [], "held while 4 may still come"
    assert buffer.pop(0.14) == [(5, "e", True)], "then released, marked as after a gap"
    buffer.push(4, "d", 0.15)  # too late now: dropped rather than written out of order
    buffer.push(5, "e", 0.15)  # a duplicate
    assert buffer.pop(1.0) == []


def ntp(unix: float) -> int:
    seconds = unix + NTP_EPOCH_OFFSET
    return (int(seconds) << 32) | int((seconds % 1) * 2**32)


def test_clock_maps_through_sender_reports_else_arrival() -> None:
    clock = Clock(90000)
    assert clock.wall(1000, arrival=50.0) == 50.0, "no SR yet: arrival time"
    assert clock.wall(1000 + 9000, arrival=99.0) == 50.1, "then RTP time from there"
    clock.sender_report(90000, ntp(1000.0))
    assert abs(clock.wall(90000 + 45000, arrival=0) - 1000.5) < 1e-6
    # Timestamps wrap; the mapping does not.
    clock = Clock(48000)
    clock.sender_report(0xFFFFFF00, ntp(10.0))
    assert abs(clock.wall(0x100, arrival=0) - (10.0 + 0x200 / 48000)) < 1e-6


def vp8_packets(frames: int, keyframes: tuple[int, ...] = (0,)) -> list[tuple[bytes, int]]:
    """RTP packets of a real VP8 stream, 30 fps, with the frame index of each."""
    encoder = Vp8Encoder()
    out: list[tuple[bytes, int]] = []
    seq = 100
    for index in range(frames):
        image = np.full((240, 320, 3), (index * 7) % 255, np.uint8)
        image[:, (index * 5) % 300 :][:, :20] = 255
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = index * 3000
        payloads, timestamp = encoder.encode(frame, force_keyframe=index in keyframes)
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == len(payloads) - 1 else 0
            header = struct.pack("!BBHII", 0x80, marker | 96, seq & 0xFFFF, index * 3000, SSRC)
            out.append((header + payload, index))
            seq += 1
    return out


def sender_report(unix: float, rtp_ts: int) -> bytes:
    return bytes(
        rtcp.RtcpSrPacket(
            ssrc=SSRC,
            sender_info=rtcp.RtcpSenderInfo(
                ntp_timestamp=ntp(unix), rtp_timestamp=rtp_ts, packet_count=1, octet_count=1
            ),
        )
    )


def spec(kind: str = "video") -> TrackSpec:
    return TrackSpec.from_dict(
        {
            "track": "t",
            "kind": kind,
            "codec": "vp8" if kind == "video" else "opus",
            "clock_rate": 90000 if kind == "video" else 48000,
            "payload_type": 96 if kind == "video" else 111,
            "ssrcs": [SSRC],
        }
    )


def test_a_lost_packet_drops_frames_until_the_next_keyframe_which_is_asked_for() -> None:
    packets = vp8_packets(40, keyframes=(0, 20))
    lost = next(i for i, (_, frame) in enumerate(packets) if frame == 10)
    recorder = TrackRecorder(spec())
    assert recorder.keyframe_wanted(0.0), "a recording starts by asking for a keyframe"
    assert not recorder.keyframe_wanted(0.5), "throttled"
    recorder.datagram(sender_report(100.0, 0), 100.0)
    frames = []
    asked = []
    for i, (packet, index) in enumerate(packets):
        now = 100.0 + index / 30  # packets arrive in real time
        if i != lost:
            recorder.datagram(packet, now)
        frames += recorder.poll(now)
        if frames and recorder.keyframe_wanted(now + i):  # a second apart: not throttled
            asked.append(i)
    assert asked and lost < asked[0] < lost + 20, "the loss made it ask for a keyframe"
    frames += recorder.flush()
    times = [round((f.time - 100.0) * 30) for f in frames]
    assert times == list(range(10)) + list(range(20, 40)), "frames 10-19 cannot be decoded"
    assert frames[0].keyframe and frames[0].size == (320, 240)
    assert frames[10].keyframe
    # Frame 10 was one packet, lost whole; 11-19 arrived but refer to it.
    assert recorder.lost == 1 and recorder.frames_dropped == 9
    # What was kept decodes from start to end without an error.
    decoder = av.CodecContext.create("vp8", "r")
    decoded = [d for f in frames for d in decoder.decode(av.Packet(f.data))]
    assert len(decoded) == 30


def test_frames_wait_for_the_first_sender_report_then_fall_back_to_arrival() -> None:
    """A consumer may start with a cached keyframe: its arrival time says little."""
    recorder = TrackRecorder(spec("audio"))
    recorder.datagram(struct.pack("!BBHII", 0x80, 111, 1, 960, SSRC) + b"a", 50.0)
    assert recorder.poll(51.0) == [], "held for the SR"
    (frame,) = recorder.poll(53.1)
    assert frame.time == 50.0, "no SR in 3 s: the arrival time it is"
    recorder = TrackRecorder(spec("audio"))
    recorder.datagram(struct.pack("!BBHII", 0x80, 111, 1, 960, SSRC) + b"a", 50.0)
    recorder.datagram(sender_report(40.0, 0), 50.5)
    (frame,) = recorder.poll(50.6)
    assert abs(frame.time - 40.02) < 1e-6, "mapped through the SR that came later"


def test_rtcp_sender_reports_set_the_clock_and_strangers_are_ignored() -> None:
    recorder = TrackRecorder(spec("audio"))
    report = rtcp.RtcpSrPacket(
        ssrc=SSRC,
        sender_info=rtcp.RtcpSenderInfo(
            ntp_timestamp=ntp(2000.0), rtp_timestamp=48000, packet_count=1, octet_count=1
        ),
    )
    recorder.datagram(bytes(report), 5.0)
    other = struct.pack("!BBHII", 0x80, 111, 1, 48000, 0x9999) + b"x"
    recorder.datagram(other, 5.0)
    recorder.datagram(struct.pack("!BBHII", 0x80, 111, 1, 48000 + 960, SSRC) + b"opus", 5.0)
    (frame,) = recorder.flush()
    assert frame.data == b"opus" and abs(frame.time - 2000.02) < 1e-6
    recorder.datagram(b"\x80\xc8garbage", 6.0)  # a broken RTCP packet is ignored


def test_the_writer_makes_a_private_webm_that_a_truncation_leaves_playable(
    tmp_path: Path,
) -> None:
    recorder = TrackRecorder(spec())
    packets = vp8_packets(90)
    writer = TrackWriter(recorder.spec, tmp_path / "v.webm", origin=100.0)
    recorder.datagram(sender_report(100.0, 0), 100.0)
    copy = tmp_path / "copy.webm"
    for i, (packet, _) in enumerate(packets):
        recorder.datagram(packet, 100.0 + i * 0.01)
        for frame in recorder.poll(100.0 + i * 0.01):
            writer.write(frame)
        if i == len(packets) * 3 // 4:
            copy.write_bytes((tmp_path / "v.webm").read_bytes())  # as a SIGKILL would leave it
    for frame in recorder.flush():
        writer.write(frame)
    writer.close()
    assert (tmp_path / "v.webm").stat().st_mode & 0o777 == 0o600
    with av.open(str(tmp_path / "v.webm")) as container:
        assert len(list(container.decode(video=0))) == 90
    with av.open(str(copy)) as container:
        assert len(list(container.decode(video=0))) >= 30, "all but the last second or so"


def test_recording_ids_start_with_a_letter_or_digit_so_the_command_line_takes_them() -> None:
    """A CI run composed recording "-m77IJmLqpUFn0Df": argparse read it as an option. With the
    old ids, 4,000 draws all starting alphanumerically has odds of (62/64)^4000 ~ 1e-55."""
    from signaling.recordings import RECORDING_ID, new_recording_id

    ids = {new_recording_id() for _ in range(4000)}
    assert len(ids) == 4000
    assert all(RECORDING_ID.match(i) and i[0].isalnum() for i in ids)


def test_compose_finds_an_older_dash_id_given_after_a_double_dash(tmp_path: Path) -> None:
    """An id made before the fix still reaches the command (after "--") and, absent from the
    folder, is reported by name rather than as a usage error."""
    import subprocess
    import sys

    config = tmp_path / "telebridge.toml"
    config.write_text(f'[recording]\nroot = "{tmp_path / "recordings"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "recordings", "--config", str(config)]
        + ["compose", "-o", str(tmp_path / "out.mp4"), "--", "-m77IJmLqpUFn0Df"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no recording '-m77IJmLqpUFn0Df'" in done.stderr, done.stderr
