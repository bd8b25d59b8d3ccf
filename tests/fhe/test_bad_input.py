"""Bad input to the encrypted path, one test each, with real TenSEAL: every refusal
names what was wrong and what to do."""

from __future__ import annotations

import numpy as np
import pytest

from secure_ds.fhe import (
    FheContextError,
    FheInputError,
    FheService,
    FheSession,
    FheWireError,
    Model,
    heldout,
)
from secure_ds.fhe._wire import KIND_CONTEXT, KIND_REQUEST, decode, encode

from .conftest import context_frame


def test_a_ciphertext_from_another_context_is_refused(
    linear_session: FheSession,
    mlp_session: FheSession,
    service: FheService,
    digits_linear: Model,
) -> None:
    x, _ = heldout("digits")
    batch = linear_session.encrypt_inputs(digits_linear, x[:1])
    # (1) ciphertexts of one context sent under another context's id and parameters
    frame = decode(batch.to_frame(), kind=KIND_REQUEST)
    foreign = encode(
        KIND_REQUEST,
        {**frame.header, "context_id": mlp_session.context_id},
        frame.blobs,
    )
    with pytest.raises(FheContextError) as info:
        service.infer(foreign)
    assert "uses parameter set 'ckks-8192-d3/1'" in str(info.value)
    assert "Encrypt with the session that uploaded the context" in str(info.value)
    # (2) same parameters, another key: the service cannot tell (CKKS ciphertexts carry
    # no key id), so the client refuses a result tagged with another session's context
    other = FheSession("ckks-8192-d2/1")
    result = service.infer(batch.to_frame())
    with pytest.raises(FheContextError, match="would decrypt to noise"):
        other.decrypt_result(digits_linear, result, 1)


def test_a_truncated_ciphertext_is_refused(
    linear_session: FheSession, service: FheService, digits_linear: Model
) -> None:
    x, _ = heldout("digits")
    batch = linear_session.encrypt_inputs(digits_linear, x[:1])
    frame = batch.to_frame()
    with pytest.raises(FheWireError, match="truncated"):
        service.infer(frame[:-100])  # cut in transit: lengths no longer add up
    # cut *and* relabelled, so the frame is consistent: TenSEAL must refuse the blob
    cut = decode(frame, kind=KIND_REQUEST)
    blobs = (cut.blobs[0][: len(cut.blobs[0]) // 2], *cut.blobs[1:])
    with pytest.raises(FheContextError, match="ciphertext 0 does not parse under context"):
        service.infer(encode(KIND_REQUEST, cut.header, blobs))


def test_an_oversized_ciphertext_is_refused_before_it_is_parsed(
    linear_session: FheSession, service: FheService, digits_linear: Model
) -> None:
    x, _ = heldout("digits")
    frame = decode(linear_session.encrypt_inputs(digits_linear, x[:1]).to_frame(), kind=2)
    padded = (frame.blobs[0] + b"\0" * 400_000, *frame.blobs[1:])
    with pytest.raises(FheWireError, match="over the 397312-byte bound"):
        service.infer(encode(KIND_REQUEST, frame.header, padded))


def test_a_context_holding_the_secret_key_is_refused(linear_session: FheSession) -> None:
    service = FheService()
    private = linear_session._context.private_bytes_for_tests()
    frame = encode(KIND_CONTEXT, {"parameter_set": "ckks-8192-d2/1", "model": "m"}, [private])
    with pytest.raises(FheContextError) as info:
        service.upload_context(frame)
    assert "contains a secret key" in str(info.value)
    assert "FheSession.public_context()" in str(info.value)
    assert not service.has_context(linear_session.context_id)
    # the public context of the same session is accepted, and is not private
    assert service.upload_context(context_frame(linear_session)) == linear_session.context_id


def test_a_vector_longer_than_the_slot_count_is_refused(linear_session: FheSession) -> None:
    with pytest.raises(FheInputError) as info:
        linear_session.encrypt(np.ones(linear_session.slots + 1))
    assert "4097 values does not fit one ciphertext of 4096 slots" in str(info.value)
    assert "Split the vector" in str(info.value)
    assert len(linear_session.encrypt(np.ones(linear_session.slots))) > 0  # the limit itself


def test_inputs_that_do_not_fit_the_model_are_refused(
    linear_session: FheSession, mlp_session: FheSession, digits_linear: Model
) -> None:
    with pytest.raises(FheInputError, match="takes vectors of 64 features"):
        linear_session.encrypt_inputs(digits_linear, np.ones(65))
    with pytest.raises(FheInputError, match="410 inputs exceed one evaluation"):
        linear_session.encrypt_inputs(digits_linear, np.ones((410, 64)))
    with pytest.raises(FheContextError, match="Open an FheSession"):
        mlp_session.encrypt_inputs(digits_linear, np.ones(64))


def test_an_unknown_context_is_refused_with_what_to_do(
    service: FheService, linear_session: FheSession, digits_linear: Model
) -> None:
    fresh = FheService()
    batch = linear_session.encrypt_inputs(digits_linear, np.ones(64))
    with pytest.raises(FheContextError) as info:
        fresh.infer(batch.to_frame())
    assert info.value.status == 404
    assert "Upload it with POST /fhe/contexts" in str(info.value)


def test_the_session_never_gives_out_its_secret_key(linear_session: FheSession) -> None:
    import pickle

    from secure_ds.fhe._tenseal import Context

    assert not Context.load(linear_session.public_context()).is_private()
    assert linear_session._context.is_private()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(linear_session)
    assert repr(linear_session).startswith("FheSession(parameter_set='ckks-8192-d2/1'")


def test_a_context_claiming_another_parameter_set_is_refused(linear_session: FheSession) -> None:
    header = {"parameter_set": "ckks-8192-d3/1", "model": "digits-mlp-v1"}
    frame = encode(KIND_CONTEXT, header, [linear_session.public_context()])
    with pytest.raises(FheContextError) as info:
        FheService().upload_context(frame)
    text = str(info.value)
    assert "moduli [60, 40, 40, 60] bits" in text
    assert "is not the parameter set 'ckks-8192-d3/1'" in text
    assert "moduli [49, 40, 40, 40, 49]" in text
