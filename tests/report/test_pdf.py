"""The signed PDF report: pyHanko's own validation accepts it with the signer's
certificate as the only trust root, rejects a copy altered by one byte, and a key that
does not match its certificate is refused before anything is written."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secure_ds.cli import main
from secure_ds.errors import ReportError
from secure_ds.report import PdfSigning, Period, export_report, load_controls

from ._certs import document_signing, write_signer
from ._records import varied_records, write_log

pytest.importorskip("pyhanko")
pytest.importorskip("reportlab")

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PERIOD = Period(dt.date(2026, 11, 1), dt.date(2026, 11, 5))


def make_signer(folder: Path, name: str = "signer") -> tuple[Path, Path]:
    """A P-256 key and a self-signed certificate for it (digitalSignature, nonRepudiation)."""
    return write_signer(
        folder,
        name,
        extensions=(
            x509.BasicConstraints(ca=True, path_length=None),
            document_signing(cert_sign=True),
        ),
    )


def validate(pdf: bytes, cert_path: Path) -> object:
    from asn1crypto import pem
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    _, _, der = pem.unarmor(cert_path.read_bytes())
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(der)])
    reader = PdfFileReader(io.BytesIO(pdf))
    assert len(reader.embedded_signatures) == 1
    return validate_pdf_signature(reader.embedded_signatures[0], context)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, varied_records(120, T0, dt.timedelta(hours=1)), every=50)
    return path


def test_the_signed_pdf_validates_and_a_one_byte_change_does_not(log: Path, tmp_path: Path) -> None:
    key, cert = make_signer(tmp_path)
    out = tmp_path / "report.pdf"
    model = export_report(
        log, PERIOD, load_controls(), "pdf", out, signing=PdfSigning(key=key, cert=cert)
    )
    assert model["totals"]["calls"] == 120
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    status = validate(pdf, cert)
    assert status.bottom_line, status.pretty_print_details()  # type: ignore[attr-defined]
    assert status.intact
    assert status.valid
    assert status.trusted
    assert status.coverage.name == "ENTIRE_FILE"  # type: ignore[attr-defined]
    # PAdES: the ETSI subfilter, signed attributes only (B-B: no timestamp without a TSA)
    assert b"/ETSI.CAdES.detached" in pdf
    assert status.timestamp_validity is None  # type: ignore[attr-defined]

    # one byte of the report's content changed (the signed byte range, not the signature)
    altered = bytearray(pdf)
    at = pdf.index(b"stream\n") + 20
    altered[at] ^= 0x01
    bad = validate(bytes(altered), cert)
    assert not bad.bottom_line  # type: ignore[attr-defined]
    assert not bad.intact  # type: ignore[attr-defined]


def test_another_certificate_as_trust_root_is_not_trusted(log: Path, tmp_path: Path) -> None:
    key, cert = make_signer(tmp_path)
    _, other_cert = make_signer(tmp_path, "other")
    out = tmp_path / "report.pdf"
    export_report(log, PERIOD, load_controls(), "pdf", out, signing=PdfSigning(key, cert))
    status = validate(out.read_bytes(), other_cert)
    assert status.intact  # type: ignore[attr-defined]
    assert not status.trusted  # type: ignore[attr-defined]


def test_a_key_that_does_not_match_its_certificate_is_refused(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, cert = make_signer(tmp_path)
    other_key, _ = make_signer(tmp_path, "other")
    out = tmp_path / "report.pdf"
    with pytest.raises(ReportError, match="does not match the certificate"):
        export_report(log, PERIOD, load_controls(), "pdf", out, signing=PdfSigning(other_key, cert))
    assert not out.exists()
    code = main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-05", "--format", "pdf",
         "--out", str(out), "--log", str(log), "--sign-key", str(other_key),
         "--sign-cert", str(cert)]
    )  # fmt: skip
    assert code == 2
    assert "does not match the certificate" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_pdf_without_signing_material_is_refused(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    code = main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-05", "--format", "pdf",
         "--out", str(out), "--log", str(log)]
    )  # fmt: skip
    assert code == 2
    assert not out.exists()


def test_a_tampered_log_is_on_the_pdf_first_page(log: Path, tmp_path: Path) -> None:
    from pyhanko.pdf_utils.reader import PdfFileReader

    key, cert = make_signer(tmp_path)
    log.write_bytes(log.read_bytes().replace(b'"max_tokens":256', b'"max_tokens":999', 1))
    out = tmp_path / "report.pdf"
    code = main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-05", "--format", "pdf",
         "--out", str(out), "--log", str(log), "--sign-key", str(key), "--sign-cert", str(cert)]
    )  # fmt: skip
    assert code == 1
    reader = PdfFileReader(io.BytesIO(out.read_bytes()))
    pages = reader.root["/Pages"]["/Kids"]
    first, second = (pages[n].get_object()["/Contents"].get_object().data for n in (0, 1))
    assert b"THE AUDIT LOG IS NOT INTACT" in first  # reportlab writes text as (...) Tj
    assert b"THE AUDIT LOG IS NOT INTACT" not in second


def test_an_encrypted_signing_key_takes_its_password_from_a_variable(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert = make_signer(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-report-pass"),
        )
    )
    out = tmp_path / "report.pdf"
    argv = ["report", "export", "--from", "2026-11-01", "--to", "2026-11-05", "--format", "pdf",
            "--out", str(out), "--log", str(log), "--sign-key", str(key),
            "--sign-cert", str(cert), "--sign-key-password-env", "REPORT_KEY_PASS"]  # fmt: skip
    assert main(argv) == 2  # the variable is not set
    assert "REPORT_KEY_PASS, which is not set" in " ".join(capsys.readouterr().err.split())
    monkeypatch.setenv("REPORT_KEY_PASS", "wrong")
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "wrong or missing password" in err
    assert "wrong" not in err.replace("wrong or missing", "")  # the password is not echoed
    assert not out.exists()
    monkeypatch.setenv("REPORT_KEY_PASS", "s3cret-report-pass")
    assert main(argv) == 0
    assert validate(out.read_bytes(), cert).bottom_line  # type: ignore[attr-defined]


def test_both_renderings_say_when_a_tally_table_is_cut(log: Path) -> None:
    # the by-principal/team/model tables show 50 rows; the HTML and the PDF both say
    # how many more the JSON form has (the PDF used to drop them without a word)
    from pyhanko.pdf_utils.reader import PdfFileReader

    from secure_ds.report import build_report
    from secure_ds.report._html import render_html
    from secure_ds.report._pdf import render_pdf

    model = build_report(log, PERIOD, load_controls())
    row = model["by_principal"][0]
    model["by_principal"] = [{**row, "name": f"user{i}"} for i in range(62)]
    assert "<p>12 more in the JSON form.</p>" in render_html(model)
    reader = PdfFileReader(io.BytesIO(render_pdf(model)))
    pages = reader.root["/Pages"]["/Kids"]
    text = b"".join(page.get_object()["/Contents"].get_object().data for page in pages)
    assert b"12 more in the JSON form." in text
    assert b"(user49)" in text
    assert b"(user50)" not in text
