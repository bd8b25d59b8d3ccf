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

import httpx2
import numpy as np
import numpy.typing as npt

from ..errors import upstream_error_for
from ._evaluate import max_batch
from ._models import Model, shipped_model
from ._session import FheSession
from ._wire import CONTENT_TYPE, KIND_CONTEXT, encode

if TYPE_CHECKING:
    from ..client import SecureDeepSeek

__all__ = ["Fhe", "FheResult"]

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


class Fhe:
    """``client.fhe``: ``infer(model=..., inputs=...)`` and the session it uses."""

    def __init__(self, client: SecureDeepSeek) -> None:
        self._client = client
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

    def upload_context(self, session: FheSession, model: str) -> int:
        """Upload the session's public context unless done already; bytes sent."""
        if session.context_id in self._uploaded:
            return 0
        frame = encode(
            KIND_CONTEXT,
            {"parameter_set": session.params.id, "model": model},
            [session.public_context()],
        )
        answer = json.loads(self._post(CONTEXTS_PATH, frame))
        if answer.get("context_id") != session.context_id:
            raise RuntimeError("the service reported another context id for our context")
        self._uploaded.add(session.context_id)
        return len(frame)

    def infer(self, *, model: str | Model, inputs: Any, batch_size: int | None = None) -> FheResult:
        """Encrypt ``inputs`` (one vector or a list), score them on the service, decrypt.

        Inputs are sent ``batch_size`` per request (default: as many as one evaluation
        takes). The service sees ciphertexts only; the result is decrypted here.
        """
        spec = model if isinstance(model, Model) else shipped_model(model)
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        step = batch_size or max_batch(spec)
        timings = {"keygen": 0.0, "context_upload": 0.0, "encrypt": 0.0, "infer": 0.0}
        timings["decrypt"] = 0.0
        sizes = {"context_bytes": 0, "request_bytes": 0, "result_bytes": 0, "requests": 0}
        t = time.perf_counter()
        session = self.session(spec.params.id)
        session.public_context()
        timings["keygen"] = _ms(t)
        t = time.perf_counter()
        sizes["context_bytes"] = self.upload_context(session, spec.id)
        timings["context_upload"] = _ms(t)
        scores = []
        for start in range(0, max(len(x), 1), step):
            t = time.perf_counter()
            batch = session.encrypt_inputs(spec, x[start : start + step])
            frame = batch.to_frame()
            timings["encrypt"] += _ms(t)
            t = time.perf_counter()
            result = self._post(INFER_PATH, frame)
            timings["infer"] += _ms(t)
            t = time.perf_counter()
            scores.append(session.decrypt_result(spec, result, batch.batch))
            timings["decrypt"] += _ms(t)
            sizes["request_bytes"] += len(frame)
            sizes["result_bytes"] += len(result)
            sizes["requests"] += 1
        return FheResult(
            model=spec.id,
            task=spec.task,
            classes=spec.classes,
            scores=np.concatenate(scores, axis=0),
            context_id=session.context_id,
            parameter_set=spec.params.id,
            timings_ms={k: round(v, 2) for k, v in timings.items()},
            sizes=sizes,
        )

    def _post(self, path: str, frame: bytes) -> bytes:
        client = self._client
        settings = client.settings
        url = str(client.base_url).rstrip("/") + path
        response = client._client.post(
            url,
            content=frame,
            headers={"content-type": CONTENT_TYPE, "accept": f"{CONTENT_TYPE}, application/json"},
            timeout=httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        )
        if response.status_code >= 300:
            raise upstream_error_for(response, _json(response.content))
        return response.content


def _json(data: bytes) -> object | None:
    try:
        parsed: object = json.loads(data)
    except ValueError:
        return None
    return parsed


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
