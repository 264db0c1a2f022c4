"""What the client does with each kind of answer to a usage batch: retry, give up, or keep for later."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from costs.client.transport import REJECTED, SENT, UNREACHABLE, Transport


class ScriptedServer:
    """Answers POSTs with the given statuses in turn (the last one repeats); keeps the bodies."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status = server.statuses[min(len(server.bodies), len(server.statuses)) - 1]
                payload = json.dumps({"error": {"code": f"code_{status}", "message": "scripted", "fields": {}}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def _make(statuses):
        server = ScriptedServer(statuses)
        servers.append(server)
        transport = Transport(url=server.url, api_key="sg_x", send_timeout=5, check_timeout=5)
        return server, transport

    yield _make
    for server in servers:
        server.close()


RECORDS = [{"request_id": "r1", "model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1}]


@pytest.mark.parametrize(
    ("statuses", "outcome", "requests"),
    [
        ([503, 502, 201], SENT, 3),  # 5xx: retried with backoff until it works
        ([503], UNREACHABLE, 3),  # ... or the attempts run out: the caller spools
        ([429, 200], SENT, 2),  # throttled: retried
        ([400], REJECTED, 1),  # invalid content: sending it again cannot help
        ([403], REJECTED, 1),
        ([401], UNREACHABLE, 1),  # a bad key or URL: no retry now, but keep the records
        ([404], UNREACHABLE, 1),
    ],
)
def test_answers(scripted, statuses, outcome, requests):
    server, transport = scripted(statuses)

    result = transport.send_usage(RECORDS, attempts=3, backoff=0.001, max_backoff=0.002)

    assert (result.outcome, len(server.bodies)) == (outcome, requests)
    assert server.bodies == [{"records": RECORDS}] * requests
    if outcome != SENT:
        assert result.detail == f"code_{statuses[-1]}: scripted"
    transport.close()


def test_interrupted_transport_makes_no_further_attempt(scripted):
    server, transport = scripted([503])
    transport.interrupt()  # the process is exiting

    result = transport.send_usage(RECORDS, attempts=5, backoff=10, max_backoff=10)

    assert (result.outcome, len(server.bodies)) == (UNREACHABLE, 1)
    transport.close()
