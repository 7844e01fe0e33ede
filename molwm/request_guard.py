"""molwm's request guard: ASGI middleware in front of MLflow's scoring app (see :mod:`molwm.serving`).

It bounds and checks a request before MLflow parses it (header size, framing, path and method, body
size, content type, UTF-8, JSON depth, the ``smiles`` cells) and turns every error answer into one line
of JSON without a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

MAX_JSON_DEPTH = 32
"""Deepest JSON nesting a request may have (a request needs 3 levels: the object, ``inputs``, the list)."""
MAX_MESSAGE = 500
"""Longest error message sent back (characters)."""
INPUT_KEYS = ("inputs", "dataframe_split", "dataframe_records", "instances")
"""MLflow's JSON request layouts: a request has exactly one of these keys."""
ROUTES = {"/invocations": ("POST",), "/ping": ("GET", "HEAD"), "/health": ("GET", "HEAD")}
"""What is served; anything else (FastAPI's ``/docs``, ``/redoc``, ``/openapi.json``, MLflow's ``/version``)
is answered 404 without reaching the app, so a server says nothing about its software."""
MAX_HEADER_BYTES = 64 * 1024
"""Largest request line plus headers accepted (bytes); larger ones are answered 431. The server reads up to
:data:`MAX_INCOMPLETE_BYTES`, so the answer reaches the client instead of a reset."""
MAX_INCOMPLETE_BYTES = 1 << 20
"""What uvicorn buffers of an incomplete request head (``--h11-max-incomplete-event-size``; its default,
16 KB, closed the connection on a client still sending a larger header: a reset, not an answer)."""

_log = logging.getLogger(__name__)


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app: bounds and checks a request before MLflow parses
    it, and turns every error answer into one line of JSON without a traceback.

    First (:func:`check_head`): a request head over :data:`MAX_HEADER_BYTES` gets 431, one with both
    ``Transfer-Encoding`` and ``Content-Length`` 400 (RFC 9112 section 6.1: a smuggling vector), a path not
    in :data:`ROUTES` 404 and a method the path does not take 405. Then, for ``/invocations``, before
    MLflow parses it: a body over ``max_body_bytes`` is refused with HTTP 413 (by its ``Content-Length``
    header before a byte is read, or while it streams in); a request without a content type gets 415; a
    JSON body that is not UTF-8, not JSON, not an object or nested more than ``max_depth`` levels gets 400.
    After: error answers keep their status, lose MLflow's ``stack_trace`` and echo of the input, and their
    message becomes one line; an exception escaping the app is logged here and answered with a one-line 500.

    Args:
        app: The ASGI app guarded (``mlflow.pyfunc.scoring_server.init(model)``).
        max_body_bytes: Largest request body accepted.
        max_depth: Deepest JSON nesting accepted (a request needs 3: object, ``inputs``, list).
    """

    def __init__(self, app, max_body_bytes: int, max_depth: int = MAX_JSON_DEPTH):
        self.app, self.max_body_bytes, self.max_depth = app, max_body_bytes, max_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # the lifespan events
            await self.app(scope, receive, send)
            return
        refusal = check_head(scope.get("method", ""), scope.get("path", ""), scope.get("headers", []))
        if refusal is not None:
            await _answer(send, refusal.status, refusal.message, refusal.headers)
            return
        if scope["path"] == "/invocations":
            receive = await self._checked_body(scope, receive, send)
            if receive is None:
                return
        await self._one_line_errors(scope, receive, send)

    async def _checked_body(self, scope, receive, send):
        """Read and check the body of a POST to ``/invocations``; a ``receive`` that replays it, or None
        when the request was answered (refused, or the client went away)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        limit_mb = self.max_body_bytes / 2**20
        length = headers.get("content-length", "").strip()
        if length and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send, 413, f"request body of {length} bytes is over the limit of {limit_mb:g} MB "
                                     f"(molwm serve --max-body-mb)")
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _answer(send, 413, f"request body is over the limit of {limit_mb:g} MB "
                                         f"(molwm serve --max-body-mb)")
                return None
            if not message.get("more_body", False):
                break
        problem = check_body(bytes(body), headers.get("content-type", ""), self.max_depth)
        if problem:
            await _answer(send, 415 if problem.startswith("content type") else 400, problem)
            return None
        replayed = []

        async def replay():
            if not replayed:
                replayed.append(True)
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay

    async def _one_line_errors(self, scope, receive, send):
        """Run the app; its error answers (MLflow's, FastAPI's, the 504 of MLflow's timeout in plain text)
        become one line of JSON."""
        started, held = {}, bytearray()

        async def one_line_errors(message):
            if message["type"] == "http.response.start":
                started.update(message)
                if message["status"] < 400:
                    await send(message)
                return
            if message["type"] == "http.response.body" and started.get("status", 200) >= 400:
                held.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _answer(send, started["status"], _error_text(bytes(held)))
                return
            await send(message)

        try:
            await self.app(scope, receive, one_line_errors)
        except Exception:  # the app answered 500 already (Starlette), or never answered: log, one line
            _log.exception("molwm serve: unexpected error answering a request")
            if not started:
                await _answer(send, 500, "molwm could not answer this request (the server log has the error)")


class Refusal(NamedTuple):
    """A request answered by the guard: HTTP status, one-line message, extra response headers."""

    status: int
    message: str
    headers: list[tuple[bytes, bytes]]


def check_head(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Refusal | None:
    """What is wrong with a request line and headers (ASGI ``[(name, value)]`` pairs); ``None`` when nothing is."""
    size = len(method) + len(path) + sum(len(k) + len(v) + 4 for k, v in headers)
    if size > MAX_HEADER_BYTES:
        return Refusal(431, f"request headers of {size:,} bytes are over the limit of {MAX_HEADER_BYTES // 1024} KB",
                       [])
    names = {k.decode("latin-1").lower() for k, _ in headers}
    if {"transfer-encoding", "content-length"} <= names:
        return Refusal(400, "request has both Transfer-Encoding and Content-Length: send one (RFC 9112 section "
                            "6.1; the pair is how requests are smuggled past proxies)", [])
    if path not in ROUTES:
        return Refusal(404, f"no such path: {path[:100]}; molwm serve answers POST /invocations, GET /ping and "
                            "GET /health", [])
    if method not in ROUTES[path]:
        allowed = ROUTES[path]
        return Refusal(405, f"{path} takes {' or '.join(allowed)}, not {method[:20]}",
                       [(b"allow", ", ".join(allowed).encode())])
    return None


def check_body(body: bytes, content_type: str, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """What is wrong with a request body before MLflow parses it, in one line; ``None`` when nothing is.

    Only JSON bodies are looked into (CSV and Parquet go to MLflow's own parsers, which answer 400)."""
    mime = content_type.split(";")[0].strip().lower()
    if not mime:
        return "content type missing: send Content-Type: application/json (or text/csv, application/vnd.apache.parquet)"
    if mime != "application/json":
        return None  # MLflow answers 415 for a type it does not read, 400 for a body its parser rejects
    if not body.strip():
        return 'request body is empty: send a JSON object such as {"inputs": {"smiles": ["CCO"]}}'
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"request body is not valid UTF-8 ({err.reason} at byte {err.start})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return f"request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
    except RecursionError:
        return f"request body is JSON nested too deeply (at most {max_depth} levels)"
    if not isinstance(data, dict):
        return (f'request body must be a JSON object such as {{"inputs": {{"smiles": ["CCO"]}}}}, '
                f"got {type(data).__name__}")
    depth = json_depth(data)
    if depth > max_depth:
        return f"request body is JSON nested {depth} levels deep (at most {max_depth})"
    keys = [k for k in INPUT_KEYS if k in data]
    if len(keys) != 1:
        return (f"request body needs exactly one of {', '.join(INPUT_KEYS)} (got "
                f"{', '.join(map(repr, data)) or 'an empty object'})")
    for i, cell in enumerate(_cells(data[keys[0]], keys[0], "smiles")):
        if not isinstance(cell, str):
            shown = "" if cell is None else " " + json.dumps(cell)[:40]
            return f"row {i}: smiles must be a string, got {_json_type(cell)}{shown}"
    return None


def _cells(payload, key: str, column: str) -> list:
    """The values of ``column`` in a request payload under ``key`` (MLflow's four JSON layouts); what is
    not in one of them is left to MLflow's parser."""
    if key in ("inputs", "instances") and isinstance(payload, dict):
        payload = payload.get(column, [])
        return payload if isinstance(payload, list) else [payload]
    if key == "dataframe_split" and isinstance(payload, dict):
        columns, rows = payload.get("columns"), payload.get("data")
        if isinstance(columns, list) and column in columns and isinstance(rows, list):
            j = columns.index(column)
            return [r[j] if isinstance(r, list) and len(r) > j else None for r in rows]
        return []
    if isinstance(payload, list):  # records: dataframe_records, or inputs / instances as a list of rows
        return [r[column] for r in payload if isinstance(r, dict) and column in r]
    return []


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def json_depth(data) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        todo.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _error_text(body: bytes) -> str:
    """The one-line message of an error answer from MLflow (its JSON ``message`` or its plain text)."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            text = data["message"]
    except ValueError:
        pass
    # MLflow prefixes a refusal with the whole input ("Failed to predict data '...'. \nError: ..."): drop it
    # and a schema error with the data and schema ("Failed to enforce schema of data '...' ... Error: ...")
    if text.startswith(("Failed to predict data", "Failed to enforce schema")) and "Error: " in text:
        text = text.rsplit("Error: ", 1)[1]
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


async def _answer(send, status: int, message: str, headers: list | None = None) -> None:
    code = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE",
            415: "UNSUPPORTED_MEDIA_TYPE", 431: "REQUEST_HEADERS_TOO_LARGE"}.get(
        status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": " ".join(message.split())}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
