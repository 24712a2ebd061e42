"""Send one trace with the official OpenTelemetry SDK and OTLP/HTTP exporter, configured only
through the standard environment variables (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and
OTEL_EXPORTER_OTLP_TRACES_HEADERS). Prints the trace id; exits 1 if the export failed.

Usage: send_spans.py REQUEST_ID
"""

import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult


class Recording(OTLPSpanExporter):
    """The stock exporter, remembering whether every export succeeded."""

    ok = True

    def export(self, spans):
        result = super().export(spans)
        Recording.ok = Recording.ok and result == SpanExportResult.SUCCESS
        return result


def main() -> int:
    request_id = sys.argv[1]
    provider = TracerProvider(resource=Resource.create({"service.name": "ranker"}))
    provider.add_span_processor(SimpleSpanProcessor(Recording()))
    tracer = provider.get_tracer("sonde-test")
    with tracer.start_as_current_span(
        "recommend", attributes={"sonde.request_id": request_id, "enduser.id": "alice"}
    ) as root:
        for component in ("retrieval", "inference"):
            with tracer.start_as_current_span(
                component,
                attributes={
                    "sonde.request_id": request_id,
                    "sonde.component": component,
                    "sonde.surface": "home_feed",
                },
            ):
                pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    print(trace_id)
    return 0 if Recording.ok else 1


if __name__ == "__main__":
    sys.exit(main())
