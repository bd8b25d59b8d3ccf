"""Encrypted inference on small models with TenSEAL (CKKS).

The client encrypts, the service computes on ciphertexts, only the client decrypts.
This is a faithful simulation of encrypted inference for *small* models (linear and
logistic heads, a small MLP with square activations); it is not, and must never be
described as, encrypted LLM inference.

- :class:`FheSession`: the client side; owns the secret key, gives out only the
  public evaluation context (``context_id``), encrypts in a model's layout, decrypts.
- :class:`FheService`: the evaluating side; caches public contexts (refusing any that
  holds a secret key) and scores request frames.
- :func:`shipped_model` / :class:`Model`: versioned model files (``models/``), trained
  by ``scripts/train_fhe_models.py`` from scikit-learn's bundled data.
- :data:`PARAMETER_SETS`: the CKKS parameter sets, all within the 128-bit bounds of
  the HomomorphicEncryption.org standard.
- ``client.fhe.infer(model=..., inputs=...)`` (:class:`Fhe`) on
  :class:`~secure_ds.SecureDeepSeek`: the whole round trip, guarded and audited.
"""

from __future__ import annotations

from ..errors import (
    FheContextError,
    FheError,
    FheInputError,
    FheModelError,
    FheParameterError,
    FheWireError,
)
from ._client import AsyncFhe, Fhe, FheResult
from ._evaluate import compile_model, max_batch
from ._models import Model, heldout, load_model, parse_model, shipped_model, shipped_models
from ._params import PARAMETER_SETS, ParameterSet, parameter_set
from ._service import FheService
from ._session import EncryptedBatch, FheSession
from ._wire import CONTENT_TYPE

__all__ = [
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
]
