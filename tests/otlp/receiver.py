"""An OTLP/HTTP receiver for tests: decodes what apiary pushes with the official
OpenTelemetry protobuf definitions (PyPI's opentelemetry-proto), never apiary's own.

Listens on 127.0.0.1 (an ephemeral port unless one is given), prints `PORT <n>` once ready,
then one JSON line per request: {"path": ..., "request": <the decoded message as a dict>}.
Answers 200 with the matching (empty) Export*ServiceResponse, as a collector does.
"""

import http.server
import json
import sys

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

KINDS = {
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        kind = KINDS.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ctype = self.headers.get("Content-Type", "")
        if kind is None or ctype != "application/x-protobuf":
            self.send_response(404 if kind is None else 415)
            self.end_headers()
            print(json.dumps({"path": self.path, "error": "unexpected " + ctype}), flush=True)
            return
        req = kind[0]()
        # Raises on a malformed body: the test then sees no line for it, and a 500 here.
        req.ParseFromString(body)
        print(
            json.dumps({"path": self.path, "request": MessageToDict(req)}),
            flush=True,
        )
        out = kind[1]().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
