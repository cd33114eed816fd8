"""Tail memory: a gateway's RSS while 100,000 log lines of 10 KB go through it, and after it has idled.

`python -m bench.tail [--quick]`

Keep-alive connections (2 per core) POST `…/logs` with 10 KB messages round-robin over 50 tasks to a real
`progressd serve` (SQLite, default settings: the live log tail holds at most `PROGRESSD_TAIL_BYTES`, 64 MiB).
Posting pauses at each checkpoint until the read models have caught up; then the server's RSS and its
`progressd_tail_bytes` gauge are read. The baseline is the RSS after the first checkpoint (the tail is full
by then: 64 MiB is about 6,000 such lines), measured in the same run; every later figure is a ratio to it.
The clients are plain sockets in threads of this process (no HTTP library), so they cost little next to
the server.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request

from bench.common import (
    Table,
    check,
    gateway,
    http_json,
    machine,
    quick_main,
    rss,
    scratch,
    section,
    write_section,
)

TASKS = 50
LINE = 10_000
TOLERANCE = 0.10
FULL = (10_000, 50_000, 100_000)
QUICK = (5_000, 10_000, 20_000)
IDLE = {False: 30.0, True: 10.0}


def request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_response(sock: socket.socket, pending: bytearray) -> int:
    """Read one HTTP/1.1 response with a Content-Length from a keep-alive socket; its status."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in lines[1:]) if k.lower() == b"content-length"
    )
    while len(rest) < length:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    pending[:] = rest[length:]
    return status


def post_lines(port: int, ids: list[str], start: int, stop: int, connections: int) -> int:
    """POST log lines numbered start..stop-1 from `connections` keep-alive sockets; how many were not 200."""
    failures = [0] * connections

    def worker(k: int) -> None:
        pending = bytearray()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for n in range(start + k, stop, connections):
                body = json.dumps({"level": "info", "message": f"line {n} ".ljust(LINE, "x")}).encode()
                sock.sendall(request(port, f"/api/tasks/{ids[n % len(ids)]}/logs", body))
                if read_response(sock, pending) != 200:
                    failures[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(failures)


def gauge(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def settled(url: str, timeout: float = 300.0) -> None:
    """Wait until every read model has applied the whole log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = http_json("GET", url + "/readyz")
            if not any(ready["lag"].values()):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("read models did not catch up")


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def run(quick: bool = False, command: str = "") -> list[Table]:
    command = command or "python -m bench.tail" + (" --quick" if quick else "")
    checkpoints = QUICK if quick else FULL
    connections = 2 * (os.cpu_count() or 1)
    facts = machine()
    table = Table(
        "Gateway RSS under 10 KB log lines (SQLite, PROGRESSD_TAIL_BYTES default 64 MiB)",
        [
            "after",
            "lines/s",
            "RSS MiB",
            "tail MiB",
            "tail events",
            "RSS ÷ first checkpoint",
            f"±{TOLERANCE:.0%}",
        ],
    )
    with scratch("tail") as tmp, gateway(tmp / "tail") as server:
        url = server.url
        ids = [
            http_json("POST", url + "/api/tasks", {"title": f"log {i}", "steps": [{"name": "a"}]})["task_id"]
            for i in range(TASKS)
        ]
        start_rss = rss(server.pid)
        table.add("start", "-", mib(start_rss), "-", "-", "-", "")
        base = 0
        posted = 0
        for target in checkpoints:
            t0 = time.perf_counter()
            failed = post_lines(server.port, ids, posted, target, connections)
            seconds = time.perf_counter() - t0
            if failed:
                raise RuntimeError(f"{failed} log lines were not accepted")
            settled(url)
            speed = (target - posted) / seconds
            posted = target
            now = rss(server.pid)
            base = base or now
            ratio = now / base
            table.add(
                f"{target:,} lines",
                f"{speed:,.0f}",
                mib(now),
                mib(gauge(url, "progressd_tail_bytes")),
                f"{gauge(url, 'progressd_tail_entries'):,.0f}",
                f"{ratio:.2f}x",
                check(abs(ratio - 1) <= TOLERANCE),
            )
            print(table.rows[-1], flush=True)
        time.sleep(IDLE[quick])
        now = rss(server.pid)
        ratio = now / base
        table.add(
            f"idle {IDLE[quick]:.0f} s",
            "-",
            mib(now),
            mib(gauge(url, "progressd_tail_bytes")),
            f"{gauge(url, 'progressd_tail_entries'):,.0f}",
            f"{ratio:.2f}x",
            check(abs(ratio - 1) <= TOLERANCE),
        )
    table.notes.append(
        f"{connections} keep-alive connections (2 per core), `POST /api/tasks/<id>/logs` with a 10,000-byte "
        f"message round-robin over {TASKS} tasks; every answer waits for the read models (read-your-writes). "
        "RSS is the server process's VmRSS after the read models have caught up."
    )
    table.notes.append(
        "Before the tail was bounded in bytes, the same run (`--quick`) went 114 → 187 → 258 → 399 MiB "
        "after 5,000, 10,000 and 20,000 lines and stayed at 399 MiB idle: the tail kept every event of its "
        "window and up to 4,000 per task, each 10 KB line as a ~15 KB frame."
    )
    table.notes.append("Machine: " + "; ".join(facts) + ".")
    print(table.text(), "\n", flush=True)
    write_section(
        "tail",
        section(
            "Tail memory",
            "A gateway's resident memory while 10 KB log lines stream through it: flat once the live log "
            "tail is full, and after idling.",
            [table],
            command,
        ),
    )
    return [table]


def main() -> None:
    quick_main("tail", __doc__, run, "20,000 lines instead of 100,000")


if __name__ == "__main__":
    main()
