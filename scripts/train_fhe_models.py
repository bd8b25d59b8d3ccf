"""Train the small models the encrypted path ships, from data bundled with scikit-learn.

    .venv/bin/pip install scikit-learn   # only this script needs it
    .venv/bin/python scripts/train_fhe_models.py

Writes ``secure_ds/fhe/models/``:

- ``digits-linear-v1.json``: multinomial logistic regression on ``load_digits`` (8x8
  images, 64 features, 10 classes); softmax/argmax on the client.
- ``digits-mlp-v1.json``: 64 -> 16 -> 10 MLP with a square activation (a polynomial,
  so it can be evaluated on ciphertexts), trained here with numpy (full-batch Adam).
- ``breast-cancer-logistic-v1.json``: logistic regression on ``load_breast_cancer``
  (30 features, binary); sigmoid on the client.
- ``digits-heldout.npz`` / ``breast-cancer-heldout.npz``: the held-out splits (raw
  features), so the tests compare encrypted and plaintext predictions without
  scikit-learn.

Standardisation is folded into the first layer (``W/sigma``, ``b - W mu/sigma``), so the
models take raw features. Everything is seeded: running it again gives the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "secure_ds" / "fhe" / "models"
SEED = 0


def fold_standardisation(
    weights: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scaled = weights / std
    return scaled, bias - scaled @ mean


def dense(weights: np.ndarray, bias: np.ndarray) -> dict[str, Any]:
    return {
        "type": "dense",
        "weights": [[round(float(v), 10) for v in row] for row in weights],
        "bias": [round(float(v), 10) for v in bias],
    }


def write_model(name: str, doc: dict[str, Any]) -> None:
    doc = {"format": "secure-ds.fhe-model", "format_version": 1, "id": name, **doc}
    (OUT / f"{name}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {name}: {doc['training']}")


def train_square_mlp(
    x: np.ndarray, y: np.ndarray, hidden: int, classes: int, epochs: int = 1500
) -> tuple[np.ndarray, ...]:
    """softmax(W2 (W1 x + b1)^2 + b2), cross-entropy + L2, full-batch Adam."""
    rng = np.random.default_rng(SEED)
    params = [
        rng.normal(0, 0.5 / np.sqrt(x.shape[1]), (hidden, x.shape[1])),
        np.zeros(hidden),
        rng.normal(0, 0.5 / np.sqrt(hidden), (classes, hidden)),
        np.zeros(classes),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    onehot = np.eye(classes)[y]
    rate, beta1, beta2, l2 = 0.01, 0.9, 0.999, 1e-4
    for step in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        h = x @ w1.T + b1
        a = h * h
        z = a @ w2.T + b2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        dz = (p - onehot) / len(x)
        dh = (dz @ w2) * 2 * h
        grads = [dh.T @ x + l2 * w1, dh.sum(0), dz.T @ a + l2 * w2, dz.sum(0)]
        for i, g in enumerate(grads):
            moments[i] = beta1 * moments[i] + (1 - beta1) * g
            squares[i] = beta2 * squares[i] + (1 - beta2) * g * g
            m_hat = moments[i] / (1 - beta1**step)
            v_hat = squares[i] / (1 - beta2**step)
            params[i] = params[i] - rate * m_hat / (np.sqrt(v_hat) + 1e-8)
    return tuple(params)


def digits() -> None:
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, random_state=SEED, stratify=data.target
    )
    mean, std = x_train.mean(0), x_train.std(0) + 1.0  # +1: constant border pixels
    z_train = (x_train - mean) / std
    classes = [str(c) for c in range(10)]

    logistic = LogisticRegression(C=0.1, max_iter=5000).fit(z_train, y_train)
    w, b = fold_standardisation(logistic.coef_, logistic.intercept_, mean, std)
    accuracy = float(((x_test @ w.T + b).argmax(1) == y_test).mean())
    write_model(
        "digits-linear-v1",
        {
            "task": "multiclass",
            "classes": classes,
            "parameter_set": "ckks-8192-d2/1",
            "input_dim": 64,
            "layers": [dense(w, b)],
            "training": _training("load_digits", "multinomial logistic regression", accuracy),
        },
    )

    w1, b1, w2, b2 = train_square_mlp(z_train, y_train, hidden=16, classes=10)
    w1, b1 = fold_standardisation(w1, b1, mean, std)
    h = x_test @ w1.T + b1
    accuracy = float((((h * h) @ w2.T + b2).argmax(1) == y_test).mean())
    write_model(
        "digits-mlp-v1",
        {
            "task": "multiclass",
            "classes": classes,
            "parameter_set": "ckks-8192-d3/1",
            "input_dim": 64,
            "layers": [dense(w1, b1), {"type": "square"}, dense(w2, b2)],
            "training": _training("load_digits", "64-16-10 MLP, square activation", accuracy),
        },
    )
    np.savez_compressed(
        OUT / "digits-heldout.npz", X=x_test.astype(np.uint8), y=y_test.astype(np.int64)
    )


def breast_cancer() -> None:
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, random_state=SEED, stratify=data.target
    )
    mean, std = x_train.mean(0), x_train.std(0)
    logistic = LogisticRegression(C=1.0, max_iter=5000).fit((x_train - mean) / std, y_train)
    w, b = fold_standardisation(logistic.coef_, logistic.intercept_, mean, std)
    accuracy = float((((x_test @ w.T + b)[:, 0] > 0).astype(int) == y_test).mean())
    write_model(
        "breast-cancer-logistic-v1",
        {
            "task": "binary",
            "classes": [str(c) for c in data.target_names],
            "parameter_set": "ckks-8192-d2/1",
            "input_dim": 30,
            "layers": [dense(w, b)],
            "training": _training("load_breast_cancer", "logistic regression", accuracy),
        },
    )
    np.savez_compressed(
        OUT / "breast-cancer-heldout.npz", X=x_test.astype(np.float64), y=y_test.astype(np.int64)
    )


def _training(dataset: str, method: str, accuracy: float) -> dict[str, Any]:
    return {
        "dataset": f"sklearn.datasets.{dataset}",
        "method": method,
        "split": f"train_test_split(test_size=0.2, random_state={SEED}, stratify=y)",
        "heldout_accuracy": round(accuracy, 4),
        "script": "scripts/train_fhe_models.py",
        "scikit_learn": sklearn.__version__,
    }


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    digits()
    breast_cancer()
