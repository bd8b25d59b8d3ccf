"""The PDF report signed by a key in a PKCS#11 HSM (the SoftHSM2 test token of
scripts/softhsm.sh): pyHanko's validation accepts it with the issuing CA as trust root;
a certificate for another key is refused before anything is written."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secure_ds.cli import main
from secure_ds.errors import ReportError
from secure_ds.report import PdfSigning, Period, Pkcs11Key, export_report, load_controls
from tests._services import SOFTHSM_MODULE, SOFTHSM_PIN, SOFTHSM_TOKEN, require_softhsm

from ._certs import certificate, document_signing
from ._records import varied_records, write_log

pytest.importorskip("pyhanko")
pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PERIOD = Period(dt.date(2026, 11, 1), dt.date(2026, 11, 3))


def issue(folder: Path, public_pem: bytes, name: str) -> tuple[Path, Path]:
    """A software test CA and a certificate it issues for ``public_pem`` (the HSM key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = "secure-ds test report CA"
    ca = certificate(
        ca_name,
        ca_key.public_key(),
        ca_key,
        extensions=(x509.BasicConstraints(ca=True, path_length=0),),
    )
    leaf = certificate(
        name,
        serialization.load_pem_public_key(public_pem),
        ca_key,
        issuer=ca_name,
        extensions=(document_signing(),),
    )
    ca_path, leaf_path = folder / f"{name}-ca.pem", folder / f"{name}.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return ca_path, leaf_path


def test_a_pdf_signed_in_the_hsm_validates(tmp_path: Path) -> None:
    from asn1crypto import pem
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    state = require_softhsm()
    ca, cert = issue(tmp_path, (state / "audit-p256.pub").read_bytes(), "hsm-signer")
    log = tmp_path / "audit.jsonl"
    write_log(log, varied_records(72, T0, dt.timedelta(hours=1)), every=50)
    out = tmp_path / "report.pdf"
    hsm = Pkcs11Key(SOFTHSM_MODULE, SOFTHSM_TOKEN, "audit-p256", SOFTHSM_PIN)
    assert SOFTHSM_PIN not in repr(hsm)
    signing = PdfSigning(key=None, cert=cert, chain=(ca,), pkcs11=hsm)
    export_report(log, PERIOD, load_controls(), "pdf", out, signing=signing)
    _, _, der = pem.unarmor(ca.read_bytes())
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(der)])
    reader = PdfFileReader(io.BytesIO(out.read_bytes()))
    status = validate_pdf_signature(reader.embedded_signatures[0], context)
    assert status.bottom_line, status.pretty_print_details()
    assert status.signing_cert.subject.native["common_name"] == "hsm-signer"


def test_an_hsm_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = require_softhsm()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem_other = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, cert = issue(tmp_path, pem_other, "not-the-hsm-key")
    log = tmp_path / "audit.jsonl"
    write_log(log, varied_records(10, T0, dt.timedelta(hours=1)))
    out = tmp_path / "report.pdf"
    hsm = Pkcs11Key(SOFTHSM_MODULE, SOFTHSM_TOKEN, "audit-p256", SOFTHSM_PIN)
    with pytest.raises(ReportError, match="does not match the certificate"):
        export_report(log, PERIOD, load_controls(), "pdf", out,
                      signing=PdfSigning(key=None, cert=cert, pkcs11=hsm))  # fmt: skip
    assert not out.exists()
    # the same through the command, the PIN from a variable
    monkeypatch.setenv("REPORT_TEST_PIN", SOFTHSM_PIN)
    code = main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-03", "--format", "pdf",
         "--out", str(out), "--log", str(log), "--sign-cert", str(cert),
         "--sign-pkcs11-key", "audit-p256", "--sign-pkcs11-module", str(SOFTHSM_MODULE),
         "--sign-pkcs11-token", SOFTHSM_TOKEN, "--sign-pkcs11-pin-env", "REPORT_TEST_PIN"]
    )  # fmt: skip
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not match the certificate" in err
    assert SOFTHSM_PIN not in err
    assert not out.exists()
    assert state.is_dir()
