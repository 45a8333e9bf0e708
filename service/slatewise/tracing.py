"""Optional OpenTelemetry tracing of the gRPC calls.

Off by default: tracing costs a little on every call and needs a collector.
``console`` writes spans to stdout (handy to check it works); ``otlp`` ships
them to an OTLP/gRPC collector at ``otel_endpoint``.
"""

from __future__ import annotations

from slatewise.config import Settings


def server_interceptors(settings: Settings) -> list:
    if settings.otel_traces == "off":
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    if settings.otel_traces == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
    return [aio_server_interceptor(tracer_provider=provider)]
