"""The HTTP/1.1 parser with a bound on each request's head: past 64 KiB of request line and headers, a 431."""

from __future__ import annotations

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 64 * 1024  # request line and headers, as sent
# A head still arriving is cut off at twice the limit: what is read of it is counted a whole chunk at a time,
# and a chunk can begin with the end of the request before it.
MAX_PARTIAL_HEAD = 2 * MAX_HEAD
HEADER_OVERHEAD = 4  # ": " and CRLF around every header line

_BODY = msgspec.json.encode(
    {
        "type": "/problems/headers-too-large",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": f"the request line and headers are over {MAX_HEAD // 1024} KiB",
    }
)
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class HeadTooLarge(Exception):
    """A request's head went over MAX_HEAD bytes."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over 64 KiB with a 431 before the app sees it.

    httptools has no limit of its own: it gathers a header of any size, and any number of headers, in memory.
    uvicorn's `h11_max_incomplete_event_size` bounds only the h11 parser (slower, and it answers a plain 400).
    """

    head_bytes = 0  # request line and headers parsed so far
    raw_bytes = 0  # bytes read while the head was incomplete
    in_head = False
    too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = self.raw_bytes = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + HEADER_OVERHEAD
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_bytes > MAX_HEAD:
            self.too_large = True
            raise HeadTooLarge  # httptools stops parsing; uvicorn then calls send_400_response
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_head and not self.too_large and not self.transport.is_closing():
            self.raw_bytes += len(data)  # a header still arriving is held by httptools: count what came
            if self.raw_bytes > MAX_PARTIAL_HEAD:
                self.too_large = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self.too_large:
            super().send_400_response(msg)
            return
        self.transport.write(_RESPONSE)
        self.transport.close()
