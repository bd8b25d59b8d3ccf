"""A private nginx per test: an independent mTLS peer with its own CA and port.

nginx (``ssl_verify_client on``, TLS 1.2/1.3) serves ``GET /v1/models`` itself and
echoes what it verified about the client certificate in response headers
(``X-Client-Fingerprint`` = SHA-1 of the certificate, ``X-Client-Verify``,
``X-Client-Subject``, ``X-TLS-Protocol``). ``POST /chat/completions`` is proxied,
unbuffered, to :class:`Upstream`, a small local HTTP server that sends one SSE chunk,
then waits for the test to open its gate before finishing, so a stream stays in flight
for as long as a test needs (no sleeps). Why nginx does not front the sandbox: see
``scripts/nginx.sh``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from secure_ds.sandbox import LocalCA

_START_TIMEOUT = 15.0
_MODELS = json.dumps(
    {"object": "list", "data": [{"id": "deepseek-chat", "object": "model", "owned_by": "deepseek"}]}
)
_GATE_TIMEOUT = 30.0


def _chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-nginx-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Upstream:
    """Plain HTTP on 127.0.0.1, reachable only through nginx in these tests."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.first_chunk_sent = threading.Event()
        self.fingerprints: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                upstream.fingerprints.append(self.headers.get("X-Client-Fingerprint", ""))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                self.wfile.write(_chunk({"role": "assistant", "content": "rotated "}, None))
                self.wfile.flush()
                upstream.first_chunk_sent.set()
                upstream.gate.wait(_GATE_TIMEOUT)
                usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
                self.wfile.write(_chunk({"content": "safely"}, None))
                self.wfile.write(_chunk({}, "stop", usage=usage))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxPeer:
    """``nginx -p <dir> -c <dir>/nginx.conf`` in the foreground, stopped by :meth:`stop`."""

    def __init__(self, binary: str, directory: Path, ca: LocalCA, upstream: Upstream) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_path = ca.write(directory)
        cert_pem, key_pem = ca.issue_server_cert(["127.0.0.1", "localhost"])
        (directory / "server.pem").write_bytes(cert_pem)
        (directory / "server-key.pem").write_bytes(key_pem)
        os.chmod(directory / "server-key.pem", 0o600)
        self.port = _free_port()
        self.base_url = f"https://127.0.0.1:{self.port}"
        self.log = directory / "error.log"
        conf = directory / "nginx.conf"
        conf.write_text(_config(directory, self.port, upstream.port))
        self._process = subprocess.Popen(  # noqa: S603 (our own binary and config)
            [binary, "-p", str(directory), "-c", str(conf), "-e", str(self.log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"nginx exited at start: {err}{self._log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port}: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()  # SIGTERM: nginx's fast shutdown, of our own master
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        if self._process.stderr is not None:
            self._process.stderr.close()


def _config(directory: Path, port: int, upstream_port: int) -> str:
    user = "user root;" if os.geteuid() == 0 else ""  # else workers run as nobody
    d = directory
    return f"""
{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server-key.pem;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_protocols TLSv1.2 TLSv1.3;
        add_header X-Client-Fingerprint $ssl_client_fingerprint always;
        add_header X-Client-Subject $ssl_client_s_dn always;
        add_header X-Client-Verify $ssl_client_verify always;
        add_header X-TLS-Protocol $ssl_protocol always;
        location ~ ^(/v1)?/models$ {{
            default_type application/json;
            return 200 '{_MODELS}';
        }}
        location ~ ^(/v1)?/chat/completions$ {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_buffering off;
            proxy_set_header X-Client-Fingerprint $ssl_client_fingerprint;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""
