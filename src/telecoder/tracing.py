"""OpenTelemetry traces: a span per session attempt, child spans per pipeline step (prepare,
setup, agent, verify, review, publish) and per model request through the gateway.

On only when an OTLP endpoint is configured by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*`` as the SDK reads them;
``OTEL_SDK_DISABLED=true`` turns it off). Off, ``span`` is a ``nullcontext`` and OpenTelemetry is
never imported: zero cost. The exporter is OTLP/HTTP (protobuf), batched.

A model request is handled by the gateway's own server task, outside the attempt's context: its
span finds its parent by the ticket's (session, attempt), registered while the attempt runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_enabled: bool | None = None
_provider: Any = None
_tracer: Any = None
_attempts: dict[tuple[str, int], Any] = {}  # (session, attempt) -> its span's context


def enabled() -> bool:
    """Whether traces are exported (decided once per process; ``reset`` decides again)."""
    global _enabled
    if _enabled is None:
        off = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
        none = os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none"
        _enabled = not off and not none and any(os.environ.get(name) for name in _ENDPOINTS)
    return _enabled


def _get_tracer() -> Any:
    global _provider, _tracer
    if _tracer is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from telecoder import __version__

        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        resource = Resource.create({"service.name": "telecoder", "service.version": __version__})
        if name := os.environ.get("OTEL_SERVICE_NAME"):
            resource = resource.merge(Resource.create({"service.name": name}))
        _provider = TracerProvider(resource=resource)
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        atexit.register(_provider.shutdown)
        _tracer = _provider.get_tracer("telecoder")
    return _tracer


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {f"telecoder.{k}": v for k, v in values.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child of the current span (an attempt's step); nothing when tracing is off."""
    if not enabled():
        yield
        return
    with _get_tracer().start_as_current_span(name, attributes=_attributes(attributes)):
        yield


@contextlib.contextmanager
def attempt(session_id: str, number: int, **attributes: Any) -> Iterator[None]:
    """The span of one session attempt: the root of its trace."""
    if not enabled():
        yield
        return
    from opentelemetry import trace

    tracer = _get_tracer()
    values = _attributes({"session_id": session_id, "attempt": number, **attributes})
    with tracer.start_as_current_span("session.attempt", attributes=values) as current:
        key = (session_id, number)
        _attempts[key] = trace.set_span_in_context(current)
        try:
            yield
        finally:
            _attempts.pop(key, None)


def model_request(
    session_id: str, attempt_number: int, seconds: float, status: int, **attributes: Any
) -> None:
    """A model request that took ``seconds`` and just ended, under its attempt's span."""
    if not enabled():
        return
    from opentelemetry.trace import Status, StatusCode

    parent = _attempts.get((session_id, attempt_number))
    ended = time.time_ns()
    values = _attributes({"session_id": session_id, **attributes})
    values["http.response.status_code"] = status
    request = _get_tracer().start_span(
        "model.request", context=parent, start_time=ended - int(seconds * 1e9), attributes=values
    )
    if status >= 400:
        request.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    request.end(end_time=ended)


def flush() -> None:
    """Export what is batched now (tests; a process's end does it by itself)."""
    if _provider is not None:
        _provider.force_flush()


def reset() -> None:
    """Export what is left, forget the exporter and read the variables again on next use."""
    global _enabled, _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
        atexit.unregister(_provider.shutdown)
    _enabled, _provider, _tracer = None, None, None
    _attempts.clear()
