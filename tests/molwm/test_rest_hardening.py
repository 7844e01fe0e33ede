"""``molwm serve`` under malformed requests (issue 20, part 2): every bad request gets a 4xx and one line,
or rows with a ``status``; never a 5xx or a traceback; the server keeps answering, even when its output
goes to a pipe nobody reads (a per-request log once stalled it after ~1,000 requests)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from molwm.request_guard import MAX_HEADER_BYTES, RequestGuard, check_head
from molwm.serving import check_body, json_depth

J = json.dumps
BAD_REQUESTS = {
    "not JSON": (b"hello", "application/json", 400, "not valid JSON"),
    "truncated JSON": (b'{"inputs": {"smiles": ["CC', "application/json", 400, "not valid JSON"),
    "empty body": (b"", "application/json", 400, "body is empty"),
    "{}": (b"{}", "application/json", 400, "needs exactly one of inputs"),
    "a JSON list": (b'["CCO"]', "application/json", 400, "must be a JSON object"),
    "two layouts": (J({"inputs": {"smiles": ["C"]}, "instances": [{"smiles": "C"}]}).encode(), "application/json",
                    400, "needs exactly one of"),
    "numbers as SMILES": (J({"inputs": {"smiles": [1, 2.5]}}).encode(), "application/json", 400,
                          "row 0: smiles must be a string, got a number"),
    "null as SMILES": (J({"inputs": {"smiles": ["CCO", None]}}).encode(), "application/json", 400,
                       "row 1: smiles must be a string, got null"),
    "an object as SMILES": (J({"inputs": {"smiles": [{"a": 1}]}}).encode(), "application/json", 400,
                            "got an object"),
    "nested lists as SMILES": (J({"inputs": {"smiles": [["CCO", ["C"]]]}}).encode(), "application/json", 400,
                               "got a list"),
    "true as SMILES": (J({"inputs": {"smiles": [True]}}).encode(), "application/json", 400, "got true/false"),
    "NaN as SMILES": (b'{"inputs": {"smiles": [NaN]}}', "application/json", 400, "got a number NaN"),
    "a number in dataframe_split": (J({"dataframe_split": {"columns": ["smiles"], "data": [[1]]}}).encode(),
                                    "application/json", 400, "row 0: smiles must be a string"),
    "null in records": (J({"dataframe_records": [{"smiles": "C"}, {"smiles": None}]}).encode(), "application/json",
                        400, "row 1: smiles must be a string, got null"),
    "a 200,000-character SMILES": (J({"inputs": {"smiles": ["C" * 200_000]}}).encode(), "application/json", 400,
                                   "SMILES has 200000 characters, over the limit"),
    "molecules over the limit": (J({"inputs": {"smiles": ["CCO"] * 5000}}).encode(), "application/json", 400,
                                 "5000 molecules, over the limit of 1000"),
    "a 2 MB body": (J({"inputs": {"smiles": ["C" * 500] * 4000}}).encode(), "application/json", 413,
                    "over the limit of 1 MB"),
    "text/plain": (b'{"inputs": {"smiles": ["CCO"]}}', "text/plain", 415, "only supports the following content"),
    "no content type": (b'{"inputs": {"smiles": ["CCO"]}}', None, 415, "content type missing"),
    "a latin-1 charset": (b'{"inputs": {"smiles": ["CCO"]}}', "application/json; charset=latin-1", 415,
                          "only supports UTF-8"),
    "unknown what": (J({"inputs": {"smiles": ["CCO"]}, "params": {"what": "dance"}}).encode(), "application/json",
                     400, "'what' must be auto, predict or embed"),
    "what as a list": (J({"inputs": {"smiles": ["CCO"]}, "params": {"what": [1]}}).encode(), "application/json",
                       400, "Value must be a scalar"),
    "an array nested 5,000 deep": (b"[" * 5000 + b"]" * 5000, "application/json", 400, "nested too deeply"),
    "an object nested 5,000 deep": (b'{"inputs": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, "application/json",
                                    400, "nested too deeply"),
    "SMILES nested 100 deep": (b'{"inputs": {"smiles": ' + b"[" * 100 + b'"C"' + b"]" * 100 + b"}}",
                               "application/json", 400, "nested 102 levels deep"),
    "invalid UTF-8": (b'{"inputs": {"smiles": ["\xff\xfeCCO"]}}', "application/json", 400, "not valid UTF-8"),
    "a lone surrogate": (b'{"inputs": {"smiles": ["\\ud800CCO"]}}', "application/json", 400, "surrogates"),
    "no smiles column": (J({"inputs": {"mol": ["CCO"]}}).encode(), "application/json", 400,
                         "missing inputs ['smiles']"),
    "broken CSV": (b'smiles\n"CCO\n', "text/csv", 400, "Failed to parse input"),
    "CSV without smiles": (b"a,b\n1,2\n", "text/csv", 400, "missing inputs ['smiles']"),
    "broken Parquet": (b"PAR1garbage", "application/vnd.apache.parquet", 400, "Failed to parse input"),
}
"""Name -> (body, content type, expected HTTP status, a fragment of the one-line message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes, content_type: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type} if content_type else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(finetune_run, tmp_path_factory, build_env):
    """The shared tiny fine-tuned model, logged from code to a temporary store and served by ``molwm serve``
    (``--max-body-mb 1``) with its output in a pipe this fixture never reads: the port."""
    from molwm.packaging import package_for
    from molwm.tracking import download_model, make_tracker

    folder = tmp_path_factory.mktemp("rest-hardening")
    with build_env(folder):
        tracker = make_tracker(True, experiment="rest-hardening")
        with tracker.run("log"):
            uri = tracker.log_model(finetune_run.checkpoint, package_for("property_model"), name="model")
        local = download_model(uri, tracker.tracking_uri)
        env = dict(os.environ)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "molwm", "serve", "--model", str(local), "--port", str(port),
                             "--max-body-mb", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 180
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.5)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.cli
def test_every_bad_request_gets_a_4xx_and_one_line(server):
    wrong = []
    for name, (body, content_type, status, fragment) in BAD_REQUESTS.items():
        code, answer = _post(server, body, content_type)
        message = json.loads(answer)["message"]  # always JSON with a message, even for a 413 or 415
        if code != status or fragment not in message or "\n" in message or "Traceback" in message \
                or len(message) > 500:
            wrong.append(f"{name}: HTTP {code} {message[:200]!r}")
    assert not wrong, "\n".join(wrong)
    code, answer = _post(server, J({"inputs": {"smiles": ["CCO", "C1CC(", "CC\x00O"]}}).encode(), "application/json")
    rows = json.loads(answer)["predictions"]  # and it still answers, row by row
    assert code == 200 and [r["status"] == "ok" for r in rows] == [True, False, False]


@pytest.mark.cli
def test_a_body_is_refused_by_its_length_before_it_is_sent(server):
    """A Content-Length over the limit is answered at once, without waiting for the 5 MB it announces."""
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000000\r\n\r\n{")
        answer = b""
        while b"}" not in answer:  # the status line and headers, then the one-line JSON body
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 1 MB" in answer


@pytest.mark.cli
def test_the_server_does_not_stall_when_its_output_is_never_read(server):
    """2,000 requests (refused ones: quick to answer, and logged like any other): past the ~1,000 at which
    a per-request log filled the fixture's unread pipe and froze the server."""
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=20)
    for _ in range(2000):
        conn.request("POST", "/invocations", body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 400
    conn.close()
    code, _ = _post(server, J({"inputs": {"smiles": ["CCO"]}}).encode(), "application/json")
    assert code == 200


@pytest.mark.unit
def test_check_body_names_what_is_wrong():
    assert check_body(b'{"inputs": {"smiles": ["CCO"]}}', "application/json") is None
    assert check_body(b"smiles\nCCO\n", "text/csv") is None  # left to MLflow's CSV parser
    assert "nested too deeply" in check_body(b"[" * 100_000, "application/json")
    assert "nested 5 levels deep (at most 4)" in check_body(b'{"inputs": {"smiles": [[["C"]]]}}',
                                                            "application/json", max_depth=4)
    assert json_depth(0) == 0 and json_depth([]) == 1 and json_depth({"a": [{"b": []}]}) == 4


def _raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send a hand-written request; the status and the JSON body of the answer (which names no server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + b"Connection: close\r\n\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    assert b"\nserver:" not in b"\n" + headers.lower()
    return int(status_line.split()[1]), json.loads(content)


@pytest.mark.cli
def test_headers_framing_and_paths_get_one_line_of_json(server):
    """Issue 26: a 200 KB header got a connection reset, chunked plus Content-Length was accepted, and
    /docs, /openapi.json and /version answered (404s and 405s as FastAPI's {"detail": ...})."""
    body = J({"inputs": {"smiles": ["CCO"]}}).encode()
    post = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    code, answer = _raw(server, post + b"X-Big: " + b"a" * 200_000 + b"\r\nContent-Length: %d\r\n" % len(body), body)
    assert code == 431 and "over the limit of 64 KB" in answer["message"]
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    code, answer = _raw(server, post + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body), chunked)
    assert code == 400 and "both Transfer-Encoding and Content-Length" in answer["message"]
    for path in ("/docs", "/redoc", "/openapi.json", "/version", "/nope"):
        code, answer = _raw(server, b"GET %s HTTP/1.1\r\nHost: x\r\n" % path.encode())
        assert (code, answer["error_code"]) == (404, "NOT_FOUND") and "no such path" in answer["message"], path
    code, answer = _raw(server, b"GET /invocations HTTP/1.1\r\nHost: x\r\n")
    assert code == 405 and answer["message"] == "/invocations takes POST, not GET"
    code, _ = _raw(server, post + b"Transfer-Encoding: chunked\r\n", chunked)  # chunked alone is fine
    assert code == 200


@pytest.mark.unit
def test_the_guard_answers_every_path_in_one_line_of_json():
    """An error of the app on any path (here MLflow's 504 timeout in plain text on /ping) becomes JSON."""
    import asyncio

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 504, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Request processing time exceeded limit"})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/ping", "headers": []}
    asyncio.run(RequestGuard(app, max_body_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {"error_code": "INTERNAL_ERROR",
                                           "message": "Request processing time exceeded limit"}
    assert check_head("GET", "/ping", [(b"x", b"a" * MAX_HEADER_BYTES)]).status == 431
    assert check_head("POST", "/invocations", [(b"Transfer-Encoding", b"chunked"), (b"content-length", b"3")]
                      ).status == 400
    assert check_head("HEAD", "/health", []) is None and check_head("POST", "/ping", []).status == 405
