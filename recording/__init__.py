"""Recording of consultations to disk without transcoding: the recorder process
(process.py) over sans-I/O timing and depacketising (timing.py, recorder.py) and the
muxer (writer.py); the offline teaching video (compose.py) and its CLI (cli.py). The
control side is signaling/recordings.py."""
