"""An OTLP/HTTP traces receiver for measuring what tracing costs the gateway: it answers every export
with 200 and counts the spans (decoding the protobuf with `opentelemetry-proto`, a test dependency), so
a bench run with tracing on exports for real and shows that it did.

    .venv/bin/python bench/otlp_sink.py --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python bench/matrix.py --levels 100 \\
        --name voicegate-tracing
    kill %1      # prints the requests and spans it received
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

received = {"requests": 0, "spans": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received["requests"] += 1
        received["bytes"] += len(body)
        received["spans"] += sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # one line at the end, not one per export
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=4318)
    args = p.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Sink)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # raised in serve_forever: the totals are printed
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        print(f"otlp sink: {received['requests']} exports, {received['spans']} spans, {received['bytes']} bytes",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
