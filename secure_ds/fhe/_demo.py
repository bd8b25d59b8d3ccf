"""The FHE round trip the ``secure-ds fhe demo`` command shows, as a library call.

Starts the sandbox (mTLS + certificate-bound JWT), scores held-out inputs of each
shipped model through ``client.fhe.infer``, compares every encrypted score with the
plaintext computation, and reads back the audit records the calls left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._models import heldout, shipped_model

__all__ = ["FheDemoReport", "FheDemoStep", "run_fhe_demo"]

_DATASETS = {
    "digits-linear-v1": "digits",
    "breast-cancer-logistic-v1": "breast-cancer",
    "digits-mlp-v1": "digits",
}


@dataclass(frozen=True)
class FheDemoStep:
    model: str
    kind: str
    parameter_set: str
    inputs: int
    agree: int  # same class as the plaintext model
    correct: int  # same as the dataset's label
    max_error: float
    timings_ms: dict[str, float]
    sizes: dict[str, int]
    records: int  # audit records the step left
    example: str  # first input: predicted class and probability

    @property
    def ok(self) -> bool:
        return self.agree == self.inputs and self.max_error <= 1e-3 and self.records >= 1


@dataclass(frozen=True)
class FheDemoReport:
    endpoint: str
    audit_path: Path
    steps: list[FheDemoStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "endpoint": self.endpoint,
            "audit_path": str(self.audit_path),
            "steps": [{**step.__dict__, "ok": step.ok} for step in self.steps],
        }


def run_fhe_demo(audit_path: Path, inputs: int = 20) -> FheDemoReport:
    from ..client import SecureDeepSeek
    from ..sandbox import Sandbox

    with Sandbox() as sandbox:
        settings = sandbox.client_settings("alice", roles=["analyst"], audit_path=audit_path)
        report = FheDemoReport(endpoint=sandbox.base_url, audit_path=audit_path)
        with SecureDeepSeek(settings=settings) as client:
            for model_id, dataset in _DATASETS.items():
                model = shipped_model(model_id)
                x, y = heldout(dataset)
                x, y = x[:inputs], y[:inputs]
                before = _lines(audit_path)
                result = client.fhe.infer(model=model_id, inputs=x)
                plain = model.plaintext_scores(x)
                if model.task == "binary":
                    plain_labels = (plain[:, 0] > 0).astype(int)
                    p_second = float(result.probabilities[0])  # P(classes[1])
                    probability = p_second if result.labels[0] == 1 else 1 - p_second
                else:
                    plain_labels = plain.argmax(axis=1)
                    probability = float(result.probabilities[0].max())
                labels = np.asarray(result.labels)
                report.steps.append(
                    FheDemoStep(
                        model=model_id,
                        kind=model.kind,
                        parameter_set=model.params.id,
                        inputs=len(x),
                        agree=int((labels == plain_labels).sum()),
                        correct=int((labels == y).sum()),
                        max_error=float(np.abs(result.scores - plain).max()),
                        timings_ms=result.timings_ms,
                        sizes=result.sizes,
                        records=_lines(audit_path) - before,
                        example=f"{result.predictions[0]} (p={probability:.3f})",
                    )
                )
    return report


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0
