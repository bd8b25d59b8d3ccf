"""secure_ds.fhe's public surface is exactly its ``__all__``; its errors are secure-ds's."""

from __future__ import annotations

import secure_ds.fhe as fhe
from secure_ds.errors import SecureDSError

EXPECTED = {
    "CONTENT_TYPE",
    "PARAMETER_SETS",
    "AsyncFhe",
    "EncryptedBatch",
    "Fhe",
    "FheContextError",
    "FheError",
    "FheInputError",
    "FheModelError",
    "FheParameterError",
    "FheResult",
    "FheService",
    "FheSession",
    "FheWireError",
    "Model",
    "ParameterSet",
    "compile_model",
    "heldout",
    "load_model",
    "max_batch",
    "parameter_set",
    "parse_model",
    "shipped_model",
    "shipped_models",
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(fhe.__all__) == EXPECTED
    public = {n for n in dir(fhe) if not n.startswith("_")} - {"annotations"}
    assert public == EXPECTED
    for name in fhe.__all__:
        assert hasattr(fhe, name)


def test_every_fhe_error_is_a_secure_ds_error_with_an_http_status() -> None:
    for error in (
        fhe.FheParameterError,
        fhe.FheModelError,
        fhe.FheInputError,
        fhe.FheWireError,
        fhe.FheContextError,
    ):
        assert issubclass(error, fhe.FheError)
        assert issubclass(error, SecureDSError)
        assert 400 <= error("x").status < 500
    assert str(fhe.FheWireError("bad frame", hint="Resend it.")) == "bad frame. Resend it."
