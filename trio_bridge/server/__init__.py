"""The serving core: h11 driven by a thin trio shell (as trio-websocket drives wsproto).

``protocol`` holds the sans-IO decisions, ``connection`` serves one connection of an ASGI-3
app (any ``trio.abc.Stream``), ``listener`` owns the sockets, the accept loop and the drain.
"""

from .connection import AbortConnection, App, ConnectionGroup, serve_connection
from .listener import HTTPServer, TCPListener, format_address, open_tcp_listeners, parse_bind
from .protocol import Limits

__all__ = [
    "AbortConnection",
    "App",
    "ConnectionGroup",
    "HTTPServer",
    "Limits",
    "TCPListener",
    "format_address",
    "open_tcp_listeners",
    "parse_bind",
    "serve_connection",
]
