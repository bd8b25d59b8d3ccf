"""Shared FHE fixtures: one key pair per parameter set and one service for the session.

Key generation and serialising a public context (Galois keys: 35-55 MB) take seconds,
so every test that is not about them shares these.
"""

from __future__ import annotations

import pytest

from secure_ds.fhe import FheService, FheSession, shipped_model
from secure_ds.fhe._wire import KIND_CONTEXT, encode


def context_frame(session: FheSession, model: str = "digits-linear-v1") -> bytes:
    header = {"parameter_set": session.params.id, "model": model}
    return encode(KIND_CONTEXT, header, [session.public_context()])


@pytest.fixture(scope="session")
def linear_session() -> FheSession:
    return FheSession("ckks-8192-d2/1")


@pytest.fixture(scope="session")
def mlp_session() -> FheSession:
    return FheSession("ckks-8192-d3/1")


@pytest.fixture(scope="session")
def service(linear_session: FheSession, mlp_session: FheSession) -> FheService:
    """A service with both sessions' public contexts uploaded."""
    svc = FheService()
    svc.upload_context(context_frame(linear_session))
    svc.upload_context(context_frame(mlp_session, "digits-mlp-v1"))
    return svc


@pytest.fixture(scope="session")
def digits_linear():  # type: ignore[no-untyped-def]
    return shipped_model("digits-linear-v1")


@pytest.fixture(scope="session")
def digits_mlp():  # type: ignore[no-untyped-def]
    return shipped_model("digits-mlp-v1")
