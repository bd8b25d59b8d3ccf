"""``client.fhe``: encrypted inference through the same guarded mTLS + JWT channel.

The client API is a thin layer over :class:`~._session.FheSession` and the wire
format: it opens one session per parameter set (the secret key stays in this process),
uploads each session's public context once (``POST /fhe/contexts``), sends encrypted
batches (``POST /fhe/infer``), decrypts, and applies the non-polynomial steps (sigmoid
or softmax, argmax) the service cannot. Both requests go through the client's own
httpx2 client, so the guard chain identifies, classifies, decides, enforces, meters
and audits them like any other call (action ``fhe_infer``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx2
import numpy as np
import numpy.typing as npt

from ..errors import FheContextError, upstream_error_for
from ._evaluate import max_batch
from ._models import Model, shipped_model
from ._session import FheSession
from ._wire import CONTENT_TYPE, KIND_CONTEXT, encode

if TYPE_CHECKING:
    from ..client import AsyncSecureDeepSeek, SecureDeepSeek

__all__ = ["AsyncFhe", "Fhe", "FheResult"]

Array = npt.NDArray[np.float64]
CONTEXTS_PATH = "/fhe/contexts"
INFER_PATH = "/fhe/infer"


@dataclass(frozen=True, eq=False)
class FheResult:
    """Decrypted scores for each input, with what the round trip cost."""

    model: str
    task: str
    classes: tuple[str, ...]
    scores: Array  # (inputs x outputs), before sigmoid/softmax
    context_id: str
    parameter_set: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def probabilities(self) -> Array:
        """Sigmoid (binary: P(classes[1])) or softmax, computed here after decryption."""
        if self.task == "binary":
            return np.asarray(1.0 / (1.0 + np.exp(-self.scores[:, 0])))
        shifted = self.scores - self.scores.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    @property
    def labels(self) -> list[int]:
        """Index of the predicted class of each input."""
        if self.task == "binary":
            return [int(s > 0) for s in self.scores[:, 0]]
        return [int(i) for i in self.scores.argmax(axis=1)]

    @property
    def predictions(self) -> list[str]:
        return [self.classes[i] for i in self.labels]


class _Round:
    """One ``infer`` call's bookkeeping: the inputs in batches, timings, sizes."""

    def __init__(self, model: str | Model, inputs: Any, batch_size: int | None) -> None:
        self.model = model if isinstance(model, Model) else shipped_model(model)
        x = np.asarray(inputs, dtype=np.float64)
        self.inputs = x[None, :] if x.ndim == 1 else x
        self.step = batch_size or max_batch(self.model)
        self.timings = dict.fromkeys(
            ("keygen", "context_upload", "encrypt", "infer", "decrypt"), 0.0
        )
        self.sizes = {"context_bytes": 0, "request_bytes": 0, "result_bytes": 0, "requests": 0}
        self.scores: list[Array] = []

    def batches(self) -> list[Array]:
        x = self.inputs
        return [x[start : start + self.step] for start in range(0, max(len(x), 1), self.step)]

    def result(self, session: FheSession) -> FheResult:
        spec = self.model
        return FheResult(
            model=spec.id,
            task=spec.task,
            classes=spec.classes,
            scores=np.concatenate(self.scores, axis=0),
            context_id=session.context_id,
            parameter_set=spec.params.id,
            timings_ms={k: round(v, 2) for k, v in self.timings.items()},
            sizes=self.sizes,
        )


class _FheBase:
    """What both clients' ``fhe`` share: one session per parameter set, uploads seen."""

    def __init__(self) -> None:
        self._sessions: dict[str, FheSession] = {}
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    def session(self, parameter_set: str) -> FheSession:
        """This client's session for a parameter set (key generation on first use)."""
        with self._lock:
            session = self._sessions.get(parameter_set)
            if session is None:
                session = self._sessions[parameter_set] = FheSession(parameter_set)
            return session

    def _ready_session(self, parameter_set: str) -> FheSession:
        session = self.session(parameter_set)
        session.public_context()  # key generation and serialisation, timed as keygen
        return session

    @staticmethod
    def _context_frame(session: FheSession, model: str) -> bytes:
        header = {"parameter_set": session.params.id, "model": model}
        return encode(KIND_CONTEXT, header, [session.public_context()])

    def _uploaded_ok(self, session: FheSession, answer: bytes) -> None:
        parsed = _json(answer)
        if not isinstance(parsed, dict) or parsed.get("context_id") != session.context_id:
            raise FheContextError(
                "the service reported another id for the uploaded context",
                hint="The service must address contexts by their SHA-256; check its version.",
            )
        self._uploaded.add(session.context_id)

    @staticmethod
    def _request(client: Any, path: str, frame: bytes) -> tuple[str, dict[str, Any]]:
        settings = client.settings
        url = str(client.base_url).rstrip("/") + path
        options = {
            "content": frame,
            "headers": {
                "content-type": CONTENT_TYPE,
                "accept": f"{CONTENT_TYPE}, application/json",
            },
            "timeout": httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        }
        return url, options


class Fhe(_FheBase):
    """``client.fhe``: ``infer(model=..., inputs=...)`` and the session it uses."""

    def __init__(self, client: SecureDeepSeek) -> None:
        super().__init__()
        self._client = client

    def upload_context(self, session: FheSession, model: str) -> int:
        """Upload the session's public context unless done already; bytes sent."""
        if session.context_id in self._uploaded:
            return 0
        frame = self._context_frame(session, model)
        self._uploaded_ok(session, self._post(CONTEXTS_PATH, frame))
        return len(frame)

    def infer(self, *, model: str | Model, inputs: Any, batch_size: int | None = None) -> FheResult:
        """Encrypt ``inputs`` (one vector or a list), score them on the service, decrypt.

        Inputs are sent ``batch_size`` per request (default: as many as one evaluation
        takes). The service sees ciphertexts only; the result is decrypted here.
        """
        run = _Round(model, inputs, batch_size)
        spec = run.model
        t = time.perf_counter()
        session = self._ready_session(spec.params.id)
        run.timings["keygen"] = _ms(t)
        t = time.perf_counter()
        run.sizes["context_bytes"] = self.upload_context(session, spec.id)
        run.timings["context_upload"] = _ms(t)
        for x in run.batches():
            t = time.perf_counter()
            batch = session.encrypt_inputs(spec, x)
            frame = batch.to_frame()
            run.timings["encrypt"] += _ms(t)
            t = time.perf_counter()
            result = self._post(INFER_PATH, frame)
            run.timings["infer"] += _ms(t)
            t = time.perf_counter()
            run.scores.append(session.decrypt_result(spec, result, batch.batch))
            run.timings["decrypt"] += _ms(t)
            _count(run, frame, result)
        return run.result(session)

    def _post(self, path: str, frame: bytes) -> bytes:
        url, options = self._request(self._client, path, frame)
        response = self._client._client.post(url, **options)
        if response.status_code >= 300:
            raise upstream_error_for(response, _json(response.content))
        return response.content


class AsyncFhe(_FheBase):
    """``AsyncSecureDeepSeek.fhe``: the async twin of :class:`Fhe`. Key generation,
    encryption and decryption are CPU-bound and run on a worker thread."""

    def __init__(self, client: AsyncSecureDeepSeek) -> None:
        super().__init__()
        self._client = client

    async def upload_context(self, session: FheSession, model: str) -> int:
        if session.context_id in self._uploaded:
            return 0
        frame = await anyio.to_thread.run_sync(self._context_frame, session, model)
        self._uploaded_ok(session, await self._post(CONTEXTS_PATH, frame))
        return len(frame)

    async def infer(
        self, *, model: str | Model, inputs: Any, batch_size: int | None = None
    ) -> FheResult:
        run = _Round(model, inputs, batch_size)
        spec = run.model
        t = time.perf_counter()
        session = await anyio.to_thread.run_sync(self._ready_session, spec.params.id)
        run.timings["keygen"] = _ms(t)
        t = time.perf_counter()
        run.sizes["context_bytes"] = await self.upload_context(session, spec.id)
        run.timings["context_upload"] = _ms(t)
        for x in run.batches():
            t = time.perf_counter()
            batch = await anyio.to_thread.run_sync(session.encrypt_inputs, spec, x)
            frame = batch.to_frame()
            run.timings["encrypt"] += _ms(t)
            t = time.perf_counter()
            result = await self._post(INFER_PATH, frame)
            run.timings["infer"] += _ms(t)
            t = time.perf_counter()
            scores = await anyio.to_thread.run_sync(
                session.decrypt_result, spec, result, batch.batch
            )
            run.scores.append(scores)
            run.timings["decrypt"] += _ms(t)
            _count(run, frame, result)
        return run.result(session)

    async def _post(self, path: str, frame: bytes) -> bytes:
        url, options = self._request(self._client, path, frame)
        response = await self._client._client.post(url, **options)
        if response.status_code >= 300:
            raise upstream_error_for(response, _json(response.content))
        return response.content


def _count(run: _Round, frame: bytes, result: bytes) -> None:
    run.sizes["request_bytes"] += len(frame)
    run.sizes["result_bytes"] += len(result)
    run.sizes["requests"] += 1


def _json(data: bytes) -> object | None:
    try:
        parsed: object = json.loads(data)
    except ValueError:
        return None
    return parsed


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
