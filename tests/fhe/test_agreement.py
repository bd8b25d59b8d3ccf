"""Encrypted and plaintext predictions agree on the whole held-out set of every shipped
model: the same class on >= 99.5 % of inputs, and every score within 1e-3."""

from __future__ import annotations

import numpy as np
import pytest

from secure_ds.fhe import FheService, FheSession, heldout, max_batch, shipped_model


def encrypted_scores(
    session: FheSession, service: FheService, model_id: str, x: np.ndarray
) -> np.ndarray:
    model = shipped_model(model_id)
    step = max_batch(model)
    out = []
    for start in range(0, len(x), step):
        batch = session.encrypt_inputs(model, x[start : start + step])
        result = service.infer(batch.to_frame())
        out.append(session.decrypt_result(model, result, batch.batch))
    return np.concatenate(out)


@pytest.mark.parametrize(
    ("model_id", "dataset"),
    [
        ("digits-linear-v1", "digits"),
        ("breast-cancer-logistic-v1", "breast-cancer"),
        ("digits-mlp-v1", "digits"),
    ],
)
def test_encrypted_and_plaintext_predictions_agree_on_the_heldout_set(
    model_id: str,
    dataset: str,
    linear_session: FheSession,
    mlp_session: FheSession,
    service: FheService,
) -> None:
    model = shipped_model(model_id)
    session = mlp_session if model.kind == "mlp" else linear_session
    x, y = heldout(dataset)
    assert len(x) >= 100  # the real held-out split, not a sample
    plain = model.plaintext_scores(x)
    enc = encrypted_scores(session, service, model_id, x)
    assert enc.shape == plain.shape == (len(x), model.outputs)
    assert np.abs(enc - plain).max() <= 1e-3
    if model.task == "binary":
        same = (enc[:, 0] > 0) == (plain[:, 0] > 0)
    else:
        same = enc.argmax(axis=1) == plain.argmax(axis=1)
    assert same.mean() >= 0.995
    # and the model is a real one: it beats chance by far on data it never saw
    predicted = (plain[:, 0] > 0).astype(int) if model.task == "binary" else plain.argmax(1)
    assert (predicted == y).mean() >= 0.9
