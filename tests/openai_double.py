"""A local OpenAI-compatible HTTP TEST DOUBLE for the LLM annotator's tests and benchmark.

Not a model: it reads the facts out of the prompt (the ``<facts>`` block and the ``<task>``
block of ``annotators/prompts/*.txt``) and answers with what the offline template annotator
says about them, so a well-behaved reply passes the fact checker. Faults are injected on
demand: per sample key (``inject``), by a rule over the key (``rule``) or for every request
(``always``):

- ``latency``  every answer waits ``latency_s`` first;
- ``"429"``    429 with a ``Retry-After`` header (``retry_after_s``);
- ``"500"``    500 Internal Server Error;
- ``"timeout"`` holds the request longer than the client waits (``hang_s``);
- ``"malformed"`` 200 with content that is not JSON;
- ``"wrong_number"`` 200 with a caption area and the region count off;
- ``"wrong_class"`` 200 with a caption naming a class that is not in the facts;
- ``"wrong_box"`` 200 with the first box of the ``refer_change`` answer moved 7 units right;
- ``"401"``    401 Unauthorized (whatever key was sent);
- ``"echo"``   200 with a correct reply whose first caption quotes the key the client sent.

With ``echo_key=True`` the double behaves like a careless endpoint: its 401 and 500 error
bodies quote the key the client sent (in the message, and as ``Authorization`` / ``api-key``
header values), as does a 401 for a wrong key.

Endpoints: ``POST /v1/chat/completions``; ``POST /v1/files`` (multipart), ``GET
/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}`` for Batch API mode.
Every request is counted; the Authorization header is checked against ``api_key`` and never
stored.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from geodelta.annotators.template import TemplateAnnotator
from geodelta.schemas import ChangeFacts

_FACTS_RE = re.compile(r"<facts>\s*(.*?)\s*</facts>", re.DOTALL)
_TASK_RE = re.compile(r"<task>\s*(.*?)\s*</task>", re.DOTALL)
_KEY_RE = re.compile(r"^Sample: (\S+)", re.MULTILINE)
_HA_RE = re.compile(r"(\d+(?:\.\d+)?) ha\b")


class OpenAIDouble:
    """The test double; use as a context manager (starts on ``127.0.0.1``, a free port).

    Args:
        api_key: the key clients must send (``Authorization: Bearer <key>``); None = any.
        latency_s: delay before every answer.
        retry_after_s: the ``Retry-After`` of injected 429s.
        hang_s: how long an injected timeout holds the request.
        json_schema: whether ``response_format: json_schema`` is accepted (else 400).
        batch_polls: how many ``GET /v1/batches/{id}`` say ``in_progress`` before ``completed``.
        echo_key: error bodies (401, 500) quote the key the client sent.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency_s: float = 0.0,
        retry_after_s: float = 0.05,
        hang_s: float = 2.0,
        json_schema: bool = True,
        batch_polls: int = 1,
        echo_key: bool = False,
    ) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.json_schema = json_schema
        self.batch_polls = batch_polls
        self.echo_key = echo_key
        self.always: str | None = None  # a fault for every chat request
        self.rule: Callable[[str], str | None] | None = None  # key -> fault, per request
        self.script: dict[str, deque[str]] = defaultdict(deque)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # path kind -> requests
        self.per_key: Counter[str] = Counter()  # sample key -> chat requests
        self.times: dict[str, list[float]] = defaultdict(list)  # sample key -> request times
        self.faults_served: Counter[str] = Counter()
        self.unauthorised = 0
        self.bodies: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------

    def inject(self, key: str, *faults: str) -> None:
        """Serve ``faults`` (in order) to the next chat requests about sample ``key``."""
        with self.lock:
            self.script[key].extend(faults)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the double first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def chat_requests(self) -> int:
        return self.counts["chat"]

    def __enter__(self) -> OpenAIDouble:
        double = self

        class Handler(_Handler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- answering -----------------------------------------------------------------------------

    def _next_fault(self, key: str | None) -> str | None:
        with self.lock:
            if key is not None and self.script.get(key):
                return self.script[key].popleft()
            rule = self.rule
        if rule is not None and key is not None:
            fault = rule(key)
            if fault is not None:
                return fault
        return self.always

    def chat(
        self, body: dict[str, Any], *, auth: str | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        """(status, headers, JSON body) of one chat completion; body None = hang.

        ``auth``: the request's ``Authorization`` header (what ``echo`` faults quote).
        """
        messages = body.get("messages") or []
        prompt = _text_of(messages[1]["content"]) if len(messages) > 1 else ""
        m = _KEY_RE.search(prompt)
        key = m.group(1) if m else None
        with self.lock:
            self.counts["chat"] += 1
            self.bodies.append(body)
            if key is not None:
                self.per_key[key] += 1
                self.times[key].append(time.monotonic())
        rf = (body.get("response_format") or {}).get("type")
        if rf == "json_schema" and not self.json_schema:
            return 400, {}, _error("response_format json_schema is not supported by this server")
        fault = self._next_fault(key)
        if fault is not None:
            with self.lock:
                self.faults_served[fault] += 1
        if fault == "429":
            headers = {"Retry-After": f"{self.retry_after_s:g}"}
            return 429, headers, _error("rate limit reached, retry later", "rate_limit_exceeded")
        if fault == "500":
            return 500, {}, self._echoing(_error("internal error", "server_error"), auth)
        if fault == "401":
            return 401, {}, self._echoing(_error("invalid api key", "invalid_api_key"), auth)
        if fault == "timeout":
            return 0, {}, None
        facts_m, task_m = _FACTS_RE.search(prompt), _TASK_RE.search(prompt)
        if facts_m is None or task_m is None:
            return 400, {}, _error("the prompt has no <facts> or <task> block")
        facts = ChangeFacts.model_validate_json(facts_m.group(1))
        task = json.loads(task_m.group(1))
        content = answer(key or "double", facts, task)
        if fault == "malformed":
            content = content[: len(content) // 2] + " <- cut"
        elif fault == "wrong_number":
            content = _wrong_number(content)
        elif fault == "wrong_class":
            content = _wrong_class(content, facts)
        elif fault == "wrong_box":
            content = _wrong_box(content)
        elif fault == "echo":
            content = _echo(content, _key_of(auth))
        chars_in = sum(len(_text_of(msg["content"])) for msg in messages)
        usage = {
            "prompt_tokens": chars_in // 4,
            "completion_tokens": len(content) // 4,
            "total_tokens": chars_in // 4 + len(content) // 4,
        }
        return (
            200,
            {},
            {
                "id": f"chatcmpl-{self.counts['chat']}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "double"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _echoing(self, error: dict[str, Any], auth: str | None) -> dict[str, Any]:
        """``error`` quoting the key the client sent, as careless endpoints do (``echo_key``)."""
        if not self.echo_key or not auth:
            return error
        key = _key_of(auth)
        error["error"]["message"] += f": Incorrect API key provided: {key}"
        error["error"]["request_headers"] = {"Authorization": auth, "api-key": key}
        return error

    def run_batch(self, batch_id: str) -> None:
        """Answer every line of a batch's input file into its output/error files."""
        batch = self.batches[batch_id]
        out_lines, err_lines = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            req = json.loads(line)
            status, _, body = self.chat(req["body"])
            if body is None:
                status, body = 500, _error("timed out")
            record = {
                "id": f"batch_req_{len(out_lines) + len(err_lines)}",
                "custom_id": req["custom_id"],
                "response": {"status_code": status, "request_id": "r", "body": body},
                "error": None,
            }
            (out_lines if status == 200 else err_lines).append(json.dumps(record))
        for name, lines in (("output_file_id", out_lines), ("error_file_id", err_lines)):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = ("\n".join(lines) + "\n").encode()
                batch[name] = file_id
        batch["request_counts"] = {
            "total": len(out_lines) + len(err_lines),
            "completed": len(out_lines),
            "failed": len(err_lines),
        }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _error(message: str, code: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


def answer(key: str, facts: ChangeFacts, task: dict[str, Any]) -> str:
    """The double's (correct) reply: the template annotator's captions and QA for the facts."""
    ann = TemplateAnnotator(captions_per_sample=int(task["captions"])).annotate(key, facts)
    wanted = list(task["qa_types"])
    qa = [
        {"type": q.type, "question": q.question, "answer": q.answer}
        for q in ann.qa
        if q.type in wanted
    ]
    return json.dumps({"captions": list(ann.captions), "qa": qa})


def _wrong_number(content: str) -> str:
    data = json.loads(content)
    for item in data["qa"]:
        if item["type"] == "count_regions":
            item["answer"] = str(int(item["answer"]) + 3)
    caps = data["captions"]
    for i, cap in enumerate(caps):
        m = _HA_RE.search(cap)
        if m:
            caps[i] = cap[: m.start(1)] + f"{float(m.group(1)) * 7 + 13:g}" + cap[m.end(1) :]
            break
    return json.dumps(data)


def _wrong_box(content: str) -> str:
    data = json.loads(content)
    for item in data["qa"]:
        if item["type"] == "refer_change":
            m = re.search(r"\[(\d+), ", item["answer"])
            if m:
                moved = min(int(m.group(1)) + 7, 990)
                item["answer"] = (
                    item["answer"][: m.start(1)] + str(moved) + item["answer"][m.end(1) :]
                )
    return json.dumps(data)


def _key_of(auth: str | None) -> str:
    return (auth or "").removeprefix("Bearer ").strip()


def _echo(content: str, key: str) -> str:
    data = json.loads(content)
    data["captions"][0] = f"{data['captions'][0]} (answered for key {key})"
    return json.dumps(data)


def _wrong_class(content: str, facts: ChangeFacts) -> str:
    data = json.loads(content)
    present = {c for t in facts.transitions for c in (t.from_class, t.to_class)}
    alien = next(c for c in ("mangroves", "snow and ice", "wetland") if c not in present)
    data["captions"][0] = f"Large stands of {alien} appeared in the tile."
    return json.dumps(data)


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIDouble
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # answer at once: headers and body are two writes, and Nagle + delayed ACK would
        # hold the second one ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # no stderr noise
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _authorised(self) -> bool:
        want = self.owner.api_key
        auth = self.headers.get("Authorization")
        if want is None or auth == f"Bearer {want}":
            return True
        with self.owner.lock:
            self.owner.unauthorised += 1
        self._send(401, self.owner._echoing(_error("invalid api key", "invalid_api_key"), auth))
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        owner = self.owner
        raw = self._body()
        if not self._authorised():
            return
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            if owner.latency_s:
                time.sleep(owner.latency_s)
            status, headers, body = owner.chat(
                json.loads(raw), auth=self.headers.get("Authorization")
            )
            if body is None:  # injected timeout: hold the request, then drop it
                owner._stop.wait(owner.hang_s)
                self.close_connection = True
                return
            self._send(status, body, headers)
        elif path.endswith("/files"):
            with owner.lock:
                owner.counts["files"] += 1
            ctype = self.headers.get("Content-Type", "")
            msg = BytesParser(policy=email_policy).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
            )
            data = b""
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    data = part.get_payload(decode=True) or b""
            file_id = f"file-{len(owner.files) + 1}"
            owner.files[file_id] = data
            self._send(
                200,
                {
                    "id": file_id,
                    "object": "file",
                    "bytes": len(data),
                    "created_at": 0,
                    "filename": "requests.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                },
            )
        elif path.endswith("/batches"):
            with owner.lock:
                owner.counts["batches"] += 1
            req = json.loads(raw)
            batch_id = f"batch_{len(owner.batches) + 1}"
            owner.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": req["endpoint"],
                "input_file_id": req["input_file_id"],
                "completion_window": req["completion_window"],
                "created_at": 0,
                "status": "in_progress",
                "polls": 0,
            }
            owner.run_batch(batch_id)
            self._send(200, _public(owner.batches[batch_id]))
        else:
            self._send(404, _error(f"no route {path}"))

    def do_GET(self) -> None:
        owner = self.owner
        if not self._authorised():
            return
        path = self.path.split("?")[0]
        m = re.search(r"/batches/([\w-]+)$", path)
        if m and m.group(1) in owner.batches:
            with owner.lock:
                owner.counts["batch_polls"] += 1
            batch = owner.batches[m.group(1)]
            batch["polls"] += 1
            if batch["polls"] >= owner.batch_polls:
                batch["status"] = "completed"
            self._send(200, _public(batch))
            return
        m = re.search(r"/files/([\w-]+)/content$", path)
        if m and m.group(1) in owner.files:
            with owner.lock:
                owner.counts["file_content"] += 1
            self._send(200, owner.files[m.group(1)])
            return
        self._send(404, _error(f"no route {path}"))


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in batch.items() if k != "polls"}
    if out["status"] != "completed":
        out.pop("output_file_id", None)
        out.pop("error_file_id", None)
    return out
