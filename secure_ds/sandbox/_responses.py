"""DeepSeek-shaped request checks and response bodies, derived only from the request.

No randomness: the same request (and caller) always yields the same content and token
counts, so tests can assert on them and benchmarks compare like with like. Only the
``id`` counter and the ``created`` timestamp vary between calls. Token counts are a
deterministic estimate (a token per four characters, at least one), not a tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "BALANCE_BODY",
    "MODELS",
    "MODELS_BODY",
    "SYSTEM_FINGERPRINT",
    "ChatRequest",
    "Completion",
    "FimRequest",
    "RequestError",
    "chat_body",
    "chat_chunks",
    "chat_completion",
    "count_tokens",
    "error_body",
    "fim_body",
    "fim_chunks",
    "fim_completion",
    "parse_chat",
    "parse_fim",
    "usage",
]

MODELS: Final = ("deepseek-flash", "deepseek-v4-pro")
SYSTEM_FINGERPRINT: Final = "fp_sandbox"

MODELS_BODY: Final = json.dumps(
    {
        "object": "list",
        "data": [{"id": model, "object": "model", "owned_by": "deepseek"} for model in MODELS],
    }
).encode()
BALANCE_BODY: Final = json.dumps(
    {
        "is_available": True,
        "balance_infos": [
            {
                "currency": "USD",
                "total_balance": "110.00",
                "granted_balance": "10.00",
                "topped_up_balance": "100.00",
            }
        ],
    }
).encode()

# status -> (type, code, default message), as DeepSeek spells them.
_ERRORS: Final[dict[int, tuple[str, str, str]]] = {
    400: ("invalid_request_error", "invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid_token", "Authentication Fails"),
    402: ("unknown_error", "invalid_request_error", "Insufficient Balance"),
    404: ("invalid_request_error", "not_found", "Not Found"),
    405: ("invalid_request_error", "method_not_allowed", "Method Not Allowed"),
    422: ("invalid_request_error", "invalid_parameter", "Invalid Parameters"),
    429: ("rate_limit_error", "rate_limit_exceeded", "Rate Limit Reached"),
    500: ("api_error", "internal_server_error", "Server Error"),
    503: ("api_error", "server_overloaded", "Server Overloaded"),
}
_CHARS_PER_TOKEN: Final = 4
_QUOTE_CHARS: Final = 60
_WORD: Final = re.compile(r"\s*\S+")


class RequestError(Exception):
    """A request the API refuses; becomes a DeepSeek error body with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str | None = None, *, param: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` for ``status``."""
    kind, code, default = _ERRORS.get(status, ("api_error", "error", "Error"))
    error = {"message": message or default, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat request the sandbox answers from."""

    model: str
    messages: list[Mapping[str, Any]]
    max_tokens: int | None
    stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FimRequest:
    """The parts of a FIM (beta completions) request the sandbox answers from."""

    model: str
    prompt: str
    suffix: str | None
    max_tokens: int | None
    stream: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """Generated text, already cut to ``max_tokens``, with its token accounting."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


# ---------------------------------------------------------------------- parsing


def parse_chat(body: object) -> ChatRequest:
    """Validate a ``/chat/completions`` body the way DeepSeek does (400, 422)."""
    data = _object(body)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, "messages must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(
                422, f"messages[{index}] must be an object with a role", param="messages"
            )
    return ChatRequest(
        model=_model(data),
        messages=messages,
        max_tokens=_max_tokens(data),
        stream=_stream(data),
    )


def parse_fim(body: object) -> FimRequest:
    """Validate a ``/beta/completions`` (fill-in-the-middle) body."""
    data = _object(body)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError(422, "prompt must be a string", param="prompt")
    suffix = data.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise RequestError(422, "suffix must be a string", param="suffix")
    return FimRequest(
        model=_model(data),
        prompt=prompt,
        suffix=suffix,
        max_tokens=_max_tokens(data),
        stream=_stream(data),
    )


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise RequestError(422, "temperature must be a number in [0, 2]", param="temperature")
    return body


def _model(data: Mapping[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(422, "model is required", param="model")
    if model not in MODELS:
        raise RequestError(400, "Model Not Exist", param="model")
    return model


def _max_tokens(data: Mapping[str, Any]) -> int | None:
    value = data.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(422, "max_tokens must be a positive integer", param="max_tokens")
    return value


def _stream(data: Mapping[str, Any]) -> bool:
    value = data.get("stream", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(422, "stream must be a boolean", param="stream")
    return value


# ---------------------------------------------------------------------- generation


def count_tokens(text: str) -> int:
    """Deterministic token estimate: one per four characters, at least one."""
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """DeepSeek's usage object; half of each full 128-token prompt block is a cache hit."""
    hit = 64 * (prompt_tokens // 128)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": prompt_tokens - hit,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(request: ChatRequest, subject: str) -> Completion:
    """The reply: who said what (the last user message, cut to 60 characters)."""
    quoted = _last_user_text(request.messages)[:_QUOTE_CHARS]
    text = f"[sandbox {request.model}] {subject} said: {quoted}"
    prompt = "".join(_text(message.get("content")) for message in request.messages)
    return _complete(text, count_tokens(prompt), request.max_tokens)


def fim_completion(request: FimRequest) -> Completion:
    """The FIM text: names the end of the prompt (and the start of the suffix)."""
    text = f"[sandbox {request.model}] after {request.prompt[-40:]!r}"
    if request.suffix:
        text += f" before {request.suffix[:20]!r}"
    prompt_tokens = count_tokens(request.prompt + (request.suffix or ""))
    return _complete(text, prompt_tokens, request.max_tokens)


def _complete(text: str, prompt_tokens: int, max_tokens: int | None) -> Completion:
    tokens = count_tokens(text)
    if max_tokens is not None and max_tokens < tokens:
        return Completion(
            text[: max_tokens * _CHARS_PER_TOKEN], "length", prompt_tokens, max_tokens
        )
    return Completion(text, "stop", prompt_tokens, tokens)


def _last_user_text(messages: list[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: object) -> str:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _pieces(text: str) -> list[str]:
    """Word-sized deltas that join back to exactly ``text``."""
    return _WORD.findall(text) or [text]


# ---------------------------------------------------------------------- bodies


def chat_body(
    completion: Completion, *, response_id: str, created: int, model: str
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _usage_of(completion),
    }


def chat_chunks(
    completion: Completion, *, response_id: str, created: int, model: str
) -> list[dict[str, Any]]:
    """``chat.completion.chunk`` objects: role, word deltas, finish, then usage alone."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in _pieces(completion.text)]
    head = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    chunks = [
        {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
        for delta in deltas
    ]
    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": completion.finish_reason}
    chunks.append({**head, "choices": [final]})
    chunks.append({**head, "choices": [], "usage": _usage_of(completion)})
    return chunks


def fim_body(
    completion: Completion, *, response_id: str, created: int, model: str
) -> dict[str, Any]:
    """A ``text_completion`` object."""
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "text": completion.text,
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _usage_of(completion),
    }


def fim_chunks(
    completion: Completion, *, response_id: str, created: int, model: str
) -> list[dict[str, Any]]:
    """Streamed ``text_completion`` objects: word pieces, finish, then usage alone."""
    head = {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    chunks = [
        {**head, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}
        for piece in _pieces(completion.text)
    ]
    final = {"index": 0, "text": "", "logprobs": None, "finish_reason": completion.finish_reason}
    chunks.append({**head, "choices": [final]})
    chunks.append({**head, "choices": [], "usage": _usage_of(completion)})
    return chunks


def _usage_of(completion: Completion) -> dict[str, Any]:
    return usage(completion.prompt_tokens, completion.completion_tokens)
