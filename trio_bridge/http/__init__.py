"""The HTTP side: the ASGI apps, routing, header hygiene, the proxy/relay loop, admin."""
