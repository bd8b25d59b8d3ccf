"""Versioned model files for the encrypted path, and the depth check at load.

A model file is JSON (``format: "secure-ds.fhe-model"``, ``format_version: 1``)::

    {"format": "secure-ds.fhe-model", "format_version": 1,
     "id": "digits-mlp-v1", "task": "multiclass", "classes": ["0", ..., "9"],
     "parameter_set": "ckks-8192-d3/1", "input_dim": 64,
     "layers": [{"type": "dense", "weights": [[...]], "bias": [...]},
                {"type": "square"},
                {"type": "dense", "weights": [[...]], "bias": [...]}],
     "training": {...}}

Two shapes are evaluated: a linear/logistic head (``[dense]``) and a small MLP with a
square activation (``[dense, square, dense]``, hidden width a power of two). Input
standardisation is folded into the first layer by the training script, so raw
features go in. Sigmoid, softmax and argmax are *not* in the file's layers: they are
not polynomials, so the client applies them after decryption (``task`` says which).

Depth (rescales) of the formulation in :mod:`._evaluate`: a linear head costs 2
(plaintext multiply, then the fold's multiply by ones); the MLP 3 (``matmul``, square,
``matmul``). A model needing more than its parameter set offers is refused when it is
loaded, naming the depth it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ..errors import FheModelError
from ._params import ParameterSet, parameter_set

__all__ = [
    "FORMAT",
    "MAX_MODEL_BYTES",
    "Model",
    "heldout",
    "load_model",
    "parse_model",
    "shipped_model",
    "shipped_models",
]

FORMAT: Final = "secure-ds.fhe-model"
FORMAT_VERSION: Final = 1
MAX_MODEL_BYTES: Final = 8 * 1024 * 1024
SHIPPED: Final = ("digits-linear-v1", "digits-mlp-v1", "breast-cancer-logistic-v1")

Task = Literal["multiclass", "binary"]
Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Dense:
    weights: Array  # (outputs, inputs)
    bias: Array  # (outputs,)


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded, checked model. ``hidden`` is ``None`` for a linear head."""

    id: str
    task: Task
    classes: tuple[str, ...]
    params: ParameterSet
    input_dim: int
    first: Dense
    second: Dense | None  # after the square activation (MLP only)
    training: dict[str, Any]

    @property
    def kind(self) -> Literal["linear", "mlp"]:
        return "linear" if self.second is None else "mlp"

    @property
    def outputs(self) -> int:
        last = self.second or self.first
        return int(last.weights.shape[0])

    @property
    def hidden(self) -> int | None:
        return None if self.second is None else int(self.first.weights.shape[0])

    @property
    def depth(self) -> int:
        return depth_of(["dense"] if self.second is None else ["dense", "square", "dense"])

    def plaintext_scores(self, inputs: Array) -> Array:
        """The reference: the same computation in float64, before any sigmoid/softmax."""
        x = np.asarray(inputs, dtype=np.float64)
        h = x @ self.first.weights.T + self.first.bias
        if self.second is None:
            return h
        return (h * h) @ self.second.weights.T + self.second.bias

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "task": self.task,
            "input_dim": self.input_dim,
            "hidden": self.hidden,
            "outputs": self.outputs,
            "depth": self.depth,
            "parameter_set": self.params.id,
        }


def depth_of(layers: list[str]) -> int:
    """A lone dense layer is folded (2 levels); otherwise each layer costs one."""
    return 2 if layers == ["dense"] else len(layers)


def load_model(path: Path) -> Model:
    """Read and check a model file (size limit first, then structure, then depth)."""
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise FheModelError(
            f"model file {path} is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit",
            hint="FHE models here are small heads; check the file is the right one.",
        )
    return parse_model(path.read_bytes(), source=str(path))


def parse_model(data: bytes, *, source: str = "<bytes>") -> Model:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise FheModelError(
            f"model file {source} is not JSON ({exc})", hint="Regenerate it."
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FheModelError(
            f"model file {source} is not a {FORMAT} file",
            hint="Produce it with scripts/train_fhe_models.py.",
        )
    if doc.get("format_version") != FORMAT_VERSION:
        raise FheModelError(
            f"model file {source} has format_version {doc.get('format_version')!r}; this "
            f"secure-ds reads version {FORMAT_VERSION}",
            hint="Upgrade secure-ds or regenerate the model file.",
        )
    model_id = _field(doc, "id", str, source)
    params = parameter_set(_field(doc, "parameter_set", str, source))
    layers = _field(doc, "layers", list, source)
    kinds = [layer.get("type") if isinstance(layer, dict) else None for layer in layers]
    if kinds not in (["dense"], ["dense", "square", "dense"]):
        raise FheModelError(
            f"model {model_id!r}: layers {kinds} are not supported",
            hint="Use [dense] (linear head) or [dense, square, dense] (MLP).",
        )
    needed = depth_of([str(k) for k in kinds])
    if needed > params.depth:
        raise FheModelError(
            f"model {model_id!r} needs multiplicative depth {needed}, but parameter set "
            f"{params.id!r} provides {params.depth}",
            hint=f"Use a parameter set of depth >= {needed} (one more {params.scale_bits}-bit "
            "prime per level), or a shallower model.",
        )
    input_dim = _field(doc, "input_dim", int, source)
    first = _dense(layers[0], model_id, 0, input_dim)
    second = None
    if len(layers) == 3:
        hidden = int(first.weights.shape[0])
        if hidden & (hidden - 1):
            raise FheModelError(
                f"model {model_id!r}: hidden width {hidden} is not a power of two",
                hint="Train with a hidden width of 8, 16, 32, ...",
            )
        second = _dense(layers[2], model_id, 2, hidden)
    task = _field(doc, "task", str, source)
    classes = _field(doc, "classes", list, source)
    outputs = int((second or first).weights.shape[0])
    expected = 1 if task == "binary" else len(classes)
    if task not in ("multiclass", "binary") or outputs != expected:
        raise FheModelError(
            f"model {model_id!r}: task {task!r} with {len(classes)} classes does not fit "
            f"{outputs} outputs",
            hint="A binary model has one output; a multiclass one, one per class.",
        )
    training = doc.get("training")
    return Model(
        id=model_id,
        task="binary" if task == "binary" else "multiclass",
        classes=tuple(str(c) for c in classes),
        params=params,
        input_dim=input_dim,
        first=first,
        second=second,
        training=training if isinstance(training, dict) else {},
    )


def _field(doc: dict[str, Any], name: str, kind: type, source: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FheModelError(
            f"model file {source}: field {name!r} is missing or not a {kind.__name__}",
            hint="Regenerate the file with scripts/train_fhe_models.py.",
        )
    return value


def _dense(layer: dict[str, Any], model_id: str, index: int, inputs: int) -> Dense:
    try:
        weights = np.asarray(layer["weights"], dtype=np.float64)
        bias = np.asarray(layer["bias"], dtype=np.float64)
    except (KeyError, ValueError, TypeError):
        raise FheModelError(
            f"model {model_id!r}: layer {index} has no numeric weights/bias",
            hint="Regenerate the file.",
        ) from None
    if weights.ndim != 2 or weights.shape[1] != inputs or bias.shape != (weights.shape[0],):
        raise FheModelError(
            f"model {model_id!r}: layer {index} weights {weights.shape} / bias {bias.shape} "
            f"do not fit {inputs} inputs",
            hint="weights must be (outputs x inputs) and bias (outputs,).",
        )
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise FheModelError(
            f"model {model_id!r}: layer {index} holds NaN or infinite values",
            hint="Regenerate the file.",
        )
    return Dense(weights, bias)


def _models_dir() -> Path:
    return Path(str(resources.files("secure_ds.fhe") / "models"))


def shipped_models() -> tuple[str, ...]:
    return SHIPPED


def shipped_model(model_id: str) -> Model:
    """One of the models in ``secure_ds/fhe/models`` (trained from scikit-learn's data)."""
    if model_id not in SHIPPED:
        raise FheModelError(
            f"unknown FHE model {model_id!r}",
            hint=f"Use one of {list(SHIPPED)}.",
            status=404,
            param="model",
        )
    return load_model(_models_dir() / f"{model_id}.json")


def heldout(dataset: str) -> tuple[Array, npt.NDArray[np.int64]]:
    """The held-out split a shipped model was tested on: ``(X, y)``, raw features."""
    with np.load(_models_dir() / f"{dataset}-heldout.npz", allow_pickle=False) as data:
        return np.asarray(data["X"], dtype=np.float64), np.asarray(data["y"], dtype=np.int64)
