"""A lean WebSocket subscriber load: many raw asyncio connections in one process, frames counted cheaply.

`python -m bench.wsclient URL N [--skip K] [--expect M] [--seq] [--timeout S]` opens N WebSockets to URL
(`ws://host:port/path`), prints `READY <n>` once every socket is upgraded and has received its first K
text frames (e.g. the snapshot), then waits until each has received M more text frames (or the timeout) and
prints one JSON line (or writes it to --out): frame counts, first and last arrival (`time.monotonic()`,
one clock for every process on the machine) and, with `--seq`, each frame's `seq` and arrival time.

Server frames are unmasked and unfragmented here, so a frame costs a few byte operations: the client stays
far from being the bottleneck (the benchmark reports its CPU time too).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SEQ = b'"seq":'


class Subscriber(asyncio.Protocol):
    """One WebSocket: handshake, then count text frames (and note each one's seq when asked)."""

    def __init__(self, host: str, path: str, seq: bool, ready: asyncio.Future[None]) -> None:
        self.host = host
        self.path = path
        self.want_seq = seq
        self.ready = ready
        self.upgraded = False
        self.buffer = bytearray()
        self.frames = 0
        self.first = 0.0
        self.last = 0.0
        self.seqs: list[tuple[int, float]] = []
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.progress = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        self.transport = tcp
        key = base64.b64encode(os.urandom(16)).decode()
        tcp.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(RuntimeError(bytes(buf[:200]).decode(errors="replace")))
                return
            del buf[: end + 4]
            self.upgraded = True
            if not self.ready.done():
                self.ready.set_result(None)
        pos = 0
        n = len(buf)
        got = False
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if n - pos < head + length:
                break
            opcode = b0 & 0x0F
            start = pos + head
            if opcode == 1:
                self.frames += 1
                if not self.first:
                    self.first = now
                self.last = now
                got = True
                if self.want_seq:
                    at = buf.find(SEQ, start, start + length)
                    if at >= 0:
                        stop = at + len(SEQ)
                        end_digits = stop
                        while end_digits < start + length and 48 <= buf[end_digits] <= 57:
                            end_digits += 1
                        self.seqs.append((int(buf[stop:end_digits]), now))
            elif opcode == 9:  # ping: answer with a masked pong carrying the same payload
                self._send(0xA, bytes(buf[start : start + length]))
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
            pos = start + length
        del buf[:pos]
        if got:
            self.progress.set()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or len(payload) > 125:
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.progress.set()


async def until(subscriber: Subscriber, frames: int, deadline: float) -> None:
    while subscriber.frames < frames and not subscriber.closed.done():
        subscriber.progress.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(subscriber.progress.wait(), remaining)
        except TimeoutError:
            return


async def run(url: str, count: int, skip: int, expect: int, seq: bool, limit: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)
    subscribers: list[Subscriber] = []

    async def connect() -> None:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            _, sub = await loop.create_connection(
                lambda: Subscriber(f"{host}:{port}", path, seq, ready), host, port
            )
            subscribers.append(sub)
            await asyncio.wait_for(ready, 60)
            await until(sub, skip, time.monotonic() + 60)

    await asyncio.gather(*(connect() for _ in range(count)))
    for sub in subscribers:  # what came before READY is not measured
        sub.frames, sub.first, sub.last, sub.seqs = 0, 0.0, 0.0, []
    print(f"READY {len(subscribers)}", flush=True)
    deadline = time.monotonic() + limit
    await asyncio.gather(*(until(sub, expect, deadline) for sub in subscribers))
    out: dict[str, Any] = {
        "sockets": len(subscribers),
        "frames": sum(s.frames for s in subscribers),
        "complete": sum(s.frames >= expect for s in subscribers),
        "first": min((s.first for s in subscribers if s.first), default=0.0),
        "last": max((s.last for s in subscribers), default=0.0),
        "cpu": time.process_time(),
    }
    if seq:
        out["seqs"] = [s.seqs for s in subscribers]
    for sub in subscribers:
        if sub.transport is not None:
            sub.transport.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wsclient")
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--skip", type=int, default=0, help="text frames each socket gets before READY")
    parser.add_argument("--expect", type=int, default=1, help="text frames each socket waits for after READY")
    parser.add_argument("--seq", action="store_true", help="record each frame's seq and arrival time")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", help="write the JSON result to this file (and print DONE)")
    args = parser.parse_args()
    from bench.common import raise_nofile

    raise_nofile(args.count + 1000)
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    result = runner(run(args.url, args.count, args.skip, args.expect, args.seq, args.timeout))
    if args.out:
        Path(args.out).write_text(json.dumps(result))
        print("DONE", flush=True)
    else:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
