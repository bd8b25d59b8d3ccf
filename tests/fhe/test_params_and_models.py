"""Parameter sets meet 128-bit security or are refused; model files are checked at
load, including a model too deep for its parameter set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_ds.fhe import (
    PARAMETER_SETS,
    FheModelError,
    FheParameterError,
    FheSession,
    ParameterSet,
    load_model,
    parameter_set,
    parse_model,
    shipped_model,
    shipped_models,
)
from secure_ds.fhe._params import MAX_MODULUS_BITS_128

MODELS = Path(__file__).parents[2] / "secure_ds" / "fhe" / "models"


def test_every_shipped_parameter_set_is_within_the_128_bit_bound() -> None:
    for params in PARAMETER_SETS.values():
        assert params.modulus_bits <= MAX_MODULUS_BITS_128[params.poly_modulus_degree]
        assert params.depth == len(params.coeff_mod_bit_sizes) - 2
        assert params.describe()["max_bits_for_128"] == 218


def test_parameters_below_128_bit_security_are_refused_naming_the_bound() -> None:
    with pytest.raises(FheParameterError, match="below 128-bit security") as info:
        ParameterSet("too-big-q", 8192, (60, 40, 40, 40, 60), 40)  # 240 bits > 218
    text = str(info.value)
    assert "240 bits" in text
    assert "at most 218" in text
    assert "double N" in text  # what to do
    with pytest.raises(FheParameterError, match="below 128-bit security"):
        ParameterSet("small-ring", 4096, (60, 40, 40), 40)  # 140 > 109


def test_unknown_ring_unknown_set_and_mismatched_primes_are_refused() -> None:
    with pytest.raises(FheParameterError, match="poly_modulus_degree 3000"):
        ParameterSet("odd", 3000, (30, 20, 30), 20)
    with pytest.raises(FheParameterError, match="unknown FHE parameter set 'nope'"):
        parameter_set("nope")
    with pytest.raises(FheParameterError, match="must all equal scale_bits"):
        ParameterSet("drift", 8192, (60, 40, 30, 60), 40)
    with pytest.raises(FheParameterError, match="unknown FHE parameter set"):
        FheSession("ckks-1024-insecure")


def test_the_shipped_models_load_with_their_parameter_sets() -> None:
    kinds = {m: shipped_model(m).describe() for m in shipped_models()}
    assert kinds["digits-linear-v1"]["kind"] == "linear"
    assert kinds["digits-linear-v1"]["depth"] == 2
    assert kinds["digits-mlp-v1"] | {"parameter_set": None} == {
        "id": "digits-mlp-v1",
        "kind": "mlp",
        "task": "multiclass",
        "input_dim": 64,
        "hidden": 16,
        "outputs": 10,
        "depth": 3,
        "parameter_set": None,
    }
    assert kinds["breast-cancer-logistic-v1"]["outputs"] == 1
    for model_id in shipped_models():
        training = shipped_model(model_id).training
        assert training["script"] == "scripts/train_fhe_models.py"
        assert training["dataset"].startswith("sklearn.datasets.load_")


def test_a_model_deeper_than_its_parameter_set_is_refused_at_load(tmp_path: Path) -> None:
    doc = json.loads((MODELS / "digits-mlp-v1.json").read_text())
    doc["parameter_set"] = "ckks-8192-d2/1"  # depth 2; the MLP needs 3
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FheModelError) as info:
        load_model(path)
    text = str(info.value)
    assert "needs multiplicative depth 3" in text
    assert "'ckks-8192-d2/1' provides 2" in text
    assert "parameter set of depth >= 3" in text


def test_malformed_model_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    good = json.loads((MODELS / "digits-linear-v1.json").read_text())
    cases = {
        "not JSON": b"{nope",
        "format_version 2": json.dumps({**good, "format_version": 2}).encode(),
        "layers ['dense', 'dense']": json.dumps(
            {**good, "layers": [good["layers"][0], good["layers"][0]]}
        ).encode(),
        "do not fit 65 inputs": json.dumps({**good, "input_dim": 65}).encode(),
        "does not fit 10 outputs": json.dumps({**good, "task": "binary"}).encode(),
    }
    for reason, data in cases.items():
        with pytest.raises(FheModelError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            parse_model(data)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (8 * 1024 * 1024 + 1))
    with pytest.raises(FheModelError, match="over the 8388608-byte limit"):
        load_model(huge)
    with pytest.raises(FheModelError, match="unknown FHE model 'gpt'"):
        shipped_model("gpt")
