"""A blocking keep-alive HTTP/1.1 client on a raw socket: the cheapest way to time one
request at a time from Python (its own cost cancels out against the direct baseline)."""

from __future__ import annotations

import socket


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawClient:
    """One keep-alive connection; ``call`` sends a prebuilt request and returns
    (status, body). Understands Content-Length and chunked responses."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def call(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 2)
            length = int(lower[i + 17 : j if j >= 0 else None])
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
            return status, body
        if b"transfer-encoding: chunked" in lower:
            return status, self._chunked()
        raise ValueError("response without Content-Length or chunked framing")

    def _chunked(self) -> bytes:
        parts = []
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buf[:eol].split(b";")[0], 16)
            while len(self.buf) < eol + 2 + size + 2:
                self._fill()
            parts.append(self.buf[eol + 2 : eol + 2 + size])
            self.buf = self.buf[eol + 2 + size + 2 :]
            if size == 0:
                return b"".join(parts)
