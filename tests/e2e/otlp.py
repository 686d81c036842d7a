"""A real OTLP/HTTP trace receiver for the tracing tests: it decodes what Bridge exports.

It listens on a free loopback port, accepts `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest` (the wire format of OpenTelemetry's collectors), decodes it with the
OpenTelemetry project's own protobuf definitions (`opentelemetry-proto`), and keeps every span.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {v: k for k, v in trace_pb2.Span.SpanKind.items()}


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Span:
    """One decoded span, with its resource's attributes."""

    def __init__(self, span, resource: dict):
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_id = span.parent_span_id.hex()
        self.name = span.name
        self.kind = KINDS[span.kind]
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.attributes = {a.key: value(a.value) for a in span.attributes}
        self.events = [(e.name, e.time_unix_nano, {a.key: value(a.value) for a in e.attributes})
                       for e in span.events]
        self.status = trace_pb2.Status.StatusCode.Name(span.status.code)
        self.trace_state = span.trace_state
        self.flags = span.flags
        self.resource = resource

    def __repr__(self):
        return f"Span({self.name!r}, {self.kind}, {self.span_id}<-{self.parent_id})"


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1, stopped by `stop()`."""

    def __init__(self):
        self.spans = []
        self.requests = 0
        self.raw = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ok = (self.path == "/v1/traces"
                      and self.headers.get("content-type") == "application/x-protobuf")
                if ok:
                    request = trace_service_pb2.ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    with lock:
                        receiver.requests += 1
                        receiver.raw.append(body)
                        for rs in request.resource_spans:
                            resource = {a.key: value(a.value) for a in rs.resource.attributes}
                            for ss in rs.scope_spans:
                                for span in ss.spans:
                                    receiver.spans.append(Span(span, resource))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str, spans: int, timeout: float = 20) -> list:
        """The spans of `trace_id`, once at least `spans` of them arrived (and any batch still on
        its way had time to land)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [s for s in self.spans if s.trace_id == trace_id]
            if len(found) >= spans:
                time.sleep(0.3)
                return [s for s in self.spans if s.trace_id == trace_id]
            time.sleep(0.05)
        raise AssertionError(f"trace {trace_id}: {len(found)} spans of {spans} after {timeout} s")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
