"""The OpenAI wire format the reference teacher speaks, shared by its chat and Batch API endpoints: error
bodies and what makes a chat completions body invalid."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def api_error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error response shaped as the OpenAI API shapes them."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def invalid_chat_body(body: Any) -> str | None:
    """Why a chat completions body is a 400, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return "'messages' must be a non-empty list"
    n = 1 if body.get("n") is None else body["n"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128:
        return "'n' must be an integer between 1 and 128"
    return None
