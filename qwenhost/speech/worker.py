"""The speech worker process (``python -m qwenhost.speech.worker``): reads one request per line on stdin,
answers each with a framed reply on stdout. It loads eSpeak NG once and synthesizes each sentence in a
fork of itself (espeak.py says why), so the server's decode threads and event loop never run the engine.

Request: a JSON line ``{"text": str, "voice": str, "timeout_s": float}``. Reply: one status byte (``O``: the
payload is PCM16 mono 24 kHz; ``E``: the payload is a UTF-8 message), a 4-byte big-endian length, the payload.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import time
from typing import BinaryIO

from qwenhost.speech.espeak import Espeak, EspeakError, library_paths
from qwenhost.speech.pcm import resample

MAX_REPLY_BYTES = 64 * 1024 * 1024  # a child that writes more than this is stopped (never for a sentence)


def reply(out: BinaryIO, status: bytes, payload: bytes) -> None:
    out.write(status + struct.pack(">I", len(payload)) + payload)
    out.flush()


def _child(engine: Espeak, text: str, voice: str, fd: int) -> None:
    try:
        pcm = resample(engine.synthesize(text, voice), engine.sample_rate)
        message = b"O" + pcm
    except Exception as exc:  # the parent answers with it; the server shows it as a failed synthesis
        message = b"E" + str(exc).encode("utf-8", "replace")
    view = memoryview(message)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)
    os._exit(0)


def _read_child(fd: int, pid: int, timeout_s: float) -> tuple[bytes, bytes]:
    data = bytearray()
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready or len(data) > MAX_REPLY_BYTES:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return b"E", f"synthesis took longer than {timeout_s:g} s".encode()
        piece = os.read(fd, 1 << 16)
        if not piece:
            break
        data += piece
    _, status = os.waitpid(pid, 0)
    if not data:
        return b"E", f"the synthesis process ended without an answer (status {status})".encode()
    return bytes(data[:1]), bytes(data[1:])


def serve(engine: Espeak, requests: BinaryIO, out: BinaryIO) -> None:
    for line in requests:
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _child(engine, str(request["text"]), str(request["voice"]), write_fd)
        os.close(write_fd)
        try:
            status, payload = _read_child(read_fd, pid, float(request.get("timeout_s", 30.0)))
        finally:
            os.close(read_fd)
        reply(out, status, payload)


def main() -> None:
    # Ctrl-C reaches the whole process group: the server shuts down and closes our stdin, which ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    try:
        engine = Espeak(*library_paths())
    except (EspeakError, OSError) as exc:
        reply(out, b"E", str(exc).encode())
        return
    reply(out, b"R", str(engine.sample_rate).encode())  # ready
    serve(engine, sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
