"""OpenTelemetry traces (contract section 13), with the GenAI semantic conventions' names.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` is set (and the ``otel`` extra is installed): then
:func:`from_environ` returns a :class:`Tracing`, else None, and the request path does
nothing at all. Spans are started and ended with explicit parents (no context variables,
which do not follow trio tasks); the batch span processor exports from its own thread.
No attribute ever holds a prompt, a key or a token: key hints are masked.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("trio_bridge.tracing")

TRACE_HEADERS = (b"traceparent", b"tracestate")
INSTRUMENTATION = "trio_bridge"


def wanted(environ: Mapping[str, str]) -> bool:
    """True when the standard OTEL_* variables ask for traces."""
    exporter = (environ.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """Starts and ends the bridge's spans on one tracer provider."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION)
        self._propagator = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT

    def request_span(
        self,
        client_headers: list[tuple[bytes, bytes]],
        name: str,
        start_ns: int,
        attributes: Mapping[str, Any],
    ) -> Any:
        """The SERVER span of one request, continuing the client's ``traceparent``."""
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in client_headers
            if k in TRACE_HEADERS
        }
        context = self._propagator.extract(carrier) if carrier else None
        return self.tracer.start_span(
            name, context=context, kind=self._server, attributes=attributes, start_time=start_ns
        )

    def attempt_span(self, parent: Any, name: str, attributes: Mapping[str, Any]) -> Any:
        """A CLIENT span for one upstream attempt, child of ``parent``."""
        context = self._trace.set_span_in_context(parent)
        return self.tracer.start_span(
            name, context=context, kind=self._client, attributes=attributes
        )

    def inject(self, span: Any, headers: list[tuple[bytes, bytes]]) -> None:
        """Replace ``traceparent``/``tracestate`` in ``headers`` with ``span``'s context."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        headers[:] = [h for h in headers if h[0] not in TRACE_HEADERS]
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items())

    def end(self, span: Any, attributes: Mapping[str, Any], error_type: str | None) -> None:
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        """Export what is buffered (blocking: call from a worker thread)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def from_environ(environ: Mapping[str, str]) -> Tracing | None:
    """A Tracing configured by the standard OTEL_* variables, or None when they do not ask
    for traces (or the ``otel`` extra is missing, which is logged)."""
    if not wanted(environ):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* variables are set but the otel extra is not installed: no traces")
        return None
    names = [
        n.strip().lower()
        for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if n.strip()
    ]
    exporters: list[Any] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporter = _otlp_exporter(environ)
            if exporter is not None:
                exporters.append(exporter)
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER: unsupported exporter %r ignored", name)
    if not exporters:
        return None
    attributes = {"service.name": environ.get("OTEL_SERVICE_NAME") or "trio-bridge"}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing on (%s)", ", ".join(names))
    return Tracing(provider)


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %r not supported; using http/protobuf", protocol)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("the OTLP exporter is not installed (trio-bridge[otel]): no traces")
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
