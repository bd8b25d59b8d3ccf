"""PAdES B-T: with ``--tsa-url`` the signature carries an RFC 3161 timestamp token,
fetched over HTTP from a timestamp authority (here one served on 127.0.0.1 by pyHanko's
own TSA responder, ``DummyTimeStamper``, with its own certificate); pyHanko's validation
accepts the timestamp with the TSA's certificate as trust root. An unreachable TSA is a
clear error and writes nothing."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from secure_ds.errors import ReportError
from secure_ds.report import PdfSigning, Period, export_report, load_controls

from ._certs import certificate
from ._records import varied_records, write_log
from .test_pdf import make_signer

pytest.importorskip("pyhanko")

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PERIOD = Period(dt.date(2026, 11, 1), dt.date(2026, 11, 2))


def tsa_material() -> tuple[bytes, bytes]:
    """A self-signed TSA certificate (critical EKU timeStamping) and its PKCS#8 key, DER."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = certificate(
        "secure-ds test TSA",
        key.public_key(),
        key,
        extensions=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),),
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.DER), key_der


@pytest.fixture
def tsa() -> Iterator[tuple[str, bytes]]:
    """An RFC 3161 responder on 127.0.0.1: (its URL, its certificate DER)."""
    from asn1crypto import keys, tsp
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

    cert_der, key_der = tsa_material()
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert_der), tsa_key=keys.PrivateKeyInfo.load(key_der)
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            reply = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa", cert_der
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_tsa_url_makes_a_pades_b_t_signature(tsa: tuple[str, bytes], tmp_path: Path) -> None:
    from asn1crypto import pem
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    url, tsa_cert = tsa
    key, cert = make_signer(tmp_path)
    log = tmp_path / "audit.jsonl"
    write_log(log, varied_records(24, T0, dt.timedelta(hours=1)))
    out = tmp_path / "report.pdf"
    export_report(
        log, PERIOD, load_controls(), "pdf", out, signing=PdfSigning(key, cert, tsa_url=url)
    )
    _, _, der = pem.unarmor(cert.read_bytes())
    signer_vc = ValidationContext(trust_roots=[asn1_x509.Certificate.load(der)])
    ts_vc = ValidationContext(trust_roots=[asn1_x509.Certificate.load(tsa_cert)])
    reader = PdfFileReader(io.BytesIO(out.read_bytes()))
    status = validate_pdf_signature(reader.embedded_signatures[0], signer_vc, ts_vc)
    assert status.bottom_line, status.pretty_print_details()
    assert status.timestamp_validity is not None  # B-T: a signature timestamp token
    assert status.timestamp_validity.intact
    assert status.timestamp_validity.valid
    assert status.timestamp_validity.trusted


def test_an_unreachable_tsa_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, cert = make_signer(tmp_path)
    log = tmp_path / "audit.jsonl"
    write_log(log, varied_records(5, T0, dt.timedelta(hours=1)))
    out = tmp_path / "report.pdf"
    signing = PdfSigning(key, cert, tsa_url=f"http://127.0.0.1:{port}/tsa")
    with pytest.raises(ReportError, match="Signing the PDF failed"):
        export_report(log, PERIOD, load_controls(), "pdf", out, signing=signing)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
