"""Prometheus metrics and a /healthz endpoint for the long-running processes."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

CASES = Counter("skintriage_cases_total", "Cases by final status and tier", ["status", "tier"])
PHOTOS_RECEIVED = Counter("skintriage_photos_received_total", "Photos the bot accepted")
QUEUE_WAIT = Histogram(
    "skintriage_queue_wait_seconds",
    "Time from queued to processing start",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
INFERENCE = Histogram(
    "skintriage_inference_seconds", "Pipeline time per photo", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
)
DELIVERIES = Counter("skintriage_deliveries_total", "Replies sent to patients by outcome", ["outcome"])


class _Handler(BaseHTTPRequestHandler):
    check: Callable[[], dict] = staticmethod(lambda: {"ok": True})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            try:
                body = self.check()
                status = 200 if body.get("ok") else 503
            except Exception as exc:  # noqa: BLE001 - a health probe reports, it never crashes the process
                body, status = {"ok": False, "error": type(exc).__name__}, 503
            data = json.dumps(body).encode()
            ctype = "application/json"
        elif self.path == "/metrics":
            data, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
        else:
            data, status, ctype = b"not found", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve_health(port: int, check: Callable[[], dict], host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Serve /healthz and /metrics on a daemon thread; port 0 disables it."""
    if not port:
        return None
    handler = type("HealthHandler", (_Handler,), {"check": staticmethod(check)})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    log.info("health and metrics on port %d", port)
    return server
