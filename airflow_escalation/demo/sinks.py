"""Local stand-ins for the outside world on 127.0.0.1: a webhook receiver and an SMTP server.

The escalation service delivers to them through ordinary Airflow connections (``http`` and
``smtp``), so what they receive is exactly what Slack-style webhooks and mail servers would.
Both keep what they received in memory and call ``on_receive`` (if given) from their thread.
"""

from __future__ import annotations

import json
import threading
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote

from airflow_escalation.demo.local_airflow import free_port


class HttpSink:
    """Answers every POST with 200 and keeps ``(path, json body)`` (the path percent-decoded)."""

    def __init__(self, on_receive: Callable[[str, dict], None] | None = None) -> None:
        self.requests: list[tuple[str, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"raw": body.decode(errors="replace")}
                path = unquote(self.path)
                sink.requests.append((path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                if on_receive:
                    on_receive(path, payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """An aiosmtpd server that accepts every message and keeps ``(recipients, message)``."""

    def __init__(self, on_receive: Callable[[list[str], EmailMessage], None] | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.port = free_port()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                recipients = list(envelope.rcpt_tos)
                mail = message_from_bytes(envelope.content, policy=email_policy.default)
                sink.messages.append((recipients, mail))
                if on_receive:
                    on_receive(recipients, mail)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
