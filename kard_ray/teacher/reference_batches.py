"""The reference teacher's Batch API: files (upload, retrieve, content) and batches (create, retrieve,
cancel, list) in the shapes the ``openai`` client reads.

A batch is validated when it is created (input file, endpoint, JSONL lines, the request and byte limits;
a bad one is ``failed`` with ``errors``), is ``in_progress`` until ``batch_delay_s`` after its creation,
and is then finished in one step: each line is answered by the same code as ``/v1/chat/completions``
and billed as it is answered (``batch_requests_billed``); a share ``batch_fail_rate`` of lines fails
unbilled (a 500 in the error file), and the first ``batch_expire`` batches expire (every line in the
error file with ``batch_expired``, nothing billed). The delay is read when a batch is polled, so a test
may change it while a client waits. State lives in memory: a restarted server knows no batches.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from kard_ray.teacher.reference_api import api_error, invalid_chat_body

if TYPE_CHECKING:  # the teacher hosts this store; the store only calls back into it
    from kard_ray.teacher.reference_server import ReferenceTeacher

ENDPOINT = "/v1/chat/completions"
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
EXPIRED = {"code": "batch_expired", "message": "This request could not be executed before the completion "
                                              "window expired."}
CANCELLED = {"code": "batch_cancelled", "message": "This request was not executed: the batch was cancelled."}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """form field -> (file name, bytes) of a multipart/form-data body (the stdlib parser: no extra package)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise ValueError("expected a multipart/form-data body")
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


class BatchStore:
    """Files and batches of one reference teacher, and the routes that serve them."""

    def __init__(self, teacher: ReferenceTeacher):
        self.teacher = teacher
        self.files: dict[str, dict[str, Any]] = {}  # id -> {"object": FileObject, "data": bytes}
        self.batches: dict[str, dict[str, Any]] = {}  # id -> Batch (insertion order = creation order)
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._created_mono: dict[str, float] = {}

    # ---- files
    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        obj = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[obj["id"]] = {"object": obj, "data": data}
        return obj

    # ---- batches
    def create(self, input_file_id: str, endpoint: str, completion_window: str,
               metadata: dict[str, str] | None) -> dict[str, Any]:
        st = self.teacher.stats
        st.batches_created += 1
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": input_file_id, "completion_window": completion_window, "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata or None,
                 "model": None, "_seq": st.batches_created - 1}
        self.batches[batch["id"]] = batch
        self._created_mono[batch["id"]] = time.monotonic()
        lines, errors = self._validate(self.files[input_file_id])
        if errors:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            self._lines[batch["id"]] = lines
            batch["request_counts"]["total"] = len(lines)
            batch["model"] = lines[0]["body"].get("model") if lines else None
        return batch

    def _validate(self, file: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        o = self.teacher.options
        if file["object"]["purpose"] != "batch":
            return [], [{"code": "invalid_file", "message": "The input file must have purpose 'batch'.",
                         "line": None, "param": "input_file_id"}]
        if len(file["data"]) > o.batch_max_bytes:
            return [], [{"code": "file_too_large", "line": None, "param": "input_file_id",
                         "message": f"The input file is larger than {o.batch_max_bytes} bytes."}]
        lines, errors, seen = [], [], set()
        for i, raw in enumerate(file["data"].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                errors.append({"code": "invalid_json_line", "message": "This line is not valid JSON.", "line": i})
                continue
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or not cid or cid in seen:
                errors.append({"code": "duplicate_custom_id" if cid in seen else "missing_required_parameter",
                               "message": "Each line needs a unique custom_id.", "line": i})
            elif line.get("method") != "POST" or line.get("url") != ENDPOINT or not isinstance(line.get("body"), dict):
                errors.append({"code": "invalid_request", "line": i,
                               "message": f"Each line needs method POST, url {ENDPOINT} and a body."})
            else:
                seen.add(cid)
                lines.append(line)
        if len(lines) > o.batch_max_requests:
            errors.append({"code": "too_many_requests", "line": None,
                           "message": f"A batch holds at most {o.batch_max_requests} requests."})
        if not lines and not errors:
            errors.append({"code": "empty_file", "message": "The input file holds no requests.", "line": None})
        return lines, errors

    def refresh(self, batch_id: str) -> dict[str, Any]:
        """Move a batch along: in progress once seen, finished once its delay has passed."""
        batch = self.batches[batch_id]
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        if batch["status"] == "in_progress" and \
                time.monotonic() - self._created_mono[batch_id] >= self.teacher.options.batch_delay_s:
            self._finish(batch)
        return batch

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.refresh(batch_id)
        if batch["status"] in ("validating", "in_progress"):
            now = int(time.time())
            lines = self._lines.pop(batch_id, [])
            batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            batch["request_counts"]["failed"] = len(lines)
            if lines:
                batch["error_file_id"] = self._output_file(batch_id, "errors",
                                                           [self._error_line(x, None, CANCELLED) for x in lines])
        return batch

    def _finish(self, batch: dict[str, Any]) -> None:
        o, st = self.teacher.options, self.teacher.stats
        now = int(time.time())
        batch.update(finalizing_at=now)
        lines = self._lines.pop(batch["id"], [])
        expire = batch["_seq"] < o.batch_expire
        outputs, errors = [], []
        for line in lines:
            cid, body = line["custom_id"], line["body"]
            if expire:
                errors.append(self._error_line(line, None, EXPIRED))
                continue
            invalid = invalid_chat_body(body)
            if invalid:
                errors.append(self._error_line(line, {"status_code": 400, "body": {"error": {
                    "message": invalid, "type": "invalid_request_error", "code": 400}}}, None))
                continue
            if o.batch_fail_rate and random.Random(f"{o.seed}:{batch['_seq']}:{cid}").random() < o.batch_fail_rate:
                errors.append(self._error_line(line, {"status_code": 500, "body": {"error": {
                    "message": "The server had an error (injected).", "type": "server_error", "code": 500}}}, None))
                continue
            result = self.teacher.complete(body)
            self.teacher.bill(body, result)
            st.batch_requests_billed += 1
            outputs.append({"id": _line_id(), "custom_id": cid, "error": None,
                            "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": result}})
        st.batch_requests_failed += len(errors)
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        if outputs:
            batch["output_file_id"] = self._output_file(batch["id"], "output", outputs)
        if errors:
            batch["error_file_id"] = self._output_file(batch["id"], "errors", errors)
        if expire:
            st.batches_expired += 1
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now)

    @staticmethod
    def _error_line(line: dict[str, Any], response: dict[str, Any] | None, error: dict[str, str] | None):
        if response is not None:
            response = {**response, "request_id": uuid.uuid4().hex}
        return {"id": _line_id(), "custom_id": line["custom_id"], "response": response, "error": error}

    def _output_file(self, batch_id: str, kind: str, lines: list[dict[str, Any]]) -> str:
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        return self.add_file(data, f"{batch_id}_{kind}.jsonl", "batch_output")["id"]

    @staticmethod
    def public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    # ---- HTTP
    def add_routes(self, app: FastAPI) -> None:  # noqa: C901 - one closure per endpoint
        teacher = self.teacher

        def guard(request: Request, call: str) -> Response | None:
            teacher.stats.batch_calls[call] += 1
            if not teacher._authorised(request):
                return api_error(401, "Incorrect API key provided.", "invalid_request_error")
            return None

        def not_found(kind: str, ident: str) -> Response:
            return api_error(404, f"No {kind} found with id '{ident}'.", "invalid_request_error")

        @app.post("/v1/files")
        async def upload(request: Request) -> Response:
            if denied := guard(request, "files.create"):
                return denied
            try:
                fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
            except ValueError as exc:
                return api_error(400, str(exc), "invalid_request_error")
            purpose = fields.get("purpose", (None, b""))[1].decode(errors="replace")
            if "file" not in fields or purpose not in FILE_PURPOSES:
                return api_error(400, f"'file' and a 'purpose' of {FILE_PURPOSES} are required.",
                              "invalid_request_error")
            name, data = fields["file"]
            return JSONResponse(self.add_file(data, name or "upload", purpose))

        @app.get("/v1/files/{file_id}")
        async def file_info(file_id: str, request: Request) -> Response:
            if denied := guard(request, "files.retrieve"):
                return denied
            f = self.files.get(file_id)
            return JSONResponse(f["object"]) if f else not_found("file", file_id)

        @app.get("/v1/files/{file_id}/content")
        async def file_content(file_id: str, request: Request) -> Response:
            if denied := guard(request, "files.content"):
                return denied
            f = self.files.get(file_id)
            return Response(f["data"], media_type="application/octet-stream") if f else not_found("file", file_id)

        @app.post("/v1/batches")
        async def create(request: Request) -> Response:
            if denied := guard(request, "batches.create"):
                return denied
            try:
                body = json.loads(await request.body())
            except json.JSONDecodeError:
                return api_error(400, "request body is not valid JSON", "invalid_request_error")
            if not isinstance(body, dict):
                return api_error(400, "request body must be an object", "invalid_request_error")
            if body.get("input_file_id") not in self.files:
                return not_found("file", str(body.get("input_file_id")))
            if body.get("endpoint") != ENDPOINT:
                return api_error(400, f"The reference teacher runs batches for {ENDPOINT} only.",
                                 "invalid_request_error")
            if body.get("completion_window") != "24h":
                return api_error(400, "completion_window must be '24h'.", "invalid_request_error")
            batch = self.create(body["input_file_id"], ENDPOINT, "24h", body.get("metadata"))
            delay = teacher.options.batch_delay_s
            asyncio.get_running_loop().call_later(delay, self.refresh, batch["id"])
            return JSONResponse(self.public(batch))

        @app.get("/v1/batches/{batch_id}")
        async def retrieve(batch_id: str, request: Request) -> Response:
            if denied := guard(request, "batches.retrieve"):
                return denied
            if batch_id not in self.batches:
                return not_found("batch", batch_id)
            return JSONResponse(self.public(self.refresh(batch_id)))

        @app.post("/v1/batches/{batch_id}/cancel")
        async def cancel(batch_id: str, request: Request) -> Response:
            if denied := guard(request, "batches.cancel"):
                return denied
            if batch_id not in self.batches:
                return not_found("batch", batch_id)
            return JSONResponse(self.public(self.cancel(batch_id)))

        @app.get("/v1/batches")
        async def list_batches(request: Request, after: str | None = None, limit: int = 20) -> Response:
            if denied := guard(request, "batches.list"):
                return denied
            ids = list(reversed(self.batches))  # newest first
            if after in self.batches:
                ids = ids[ids.index(after) + 1:]
            limit = max(1, min(limit, 100))
            page = [self.public(self.refresh(i)) for i in ids[:limit]]
            return JSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                 "last_id": page[-1]["id"] if page else None, "has_more": len(ids) > limit})
