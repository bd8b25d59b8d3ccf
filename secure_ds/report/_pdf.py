"""The report as a PDF an auditor reads, signed with pyHanko (PAdES).

Rendering is reportlab (platypus flowables, charts from ``reportlab.graphics``): a
first page with the log's integrity (a tampered log in a red box before anything
else), what the report cannot attest and the summary; then the per-control tables,
the charts, the breakdowns, and an appendix with keys, rotations and checkpoint
roots. Signing is pyHanko: PAdES baseline B-B with the given key and certificate,
B-T when a timestamp authority URL is given (RFC 3161 over HTTP). Both libraries come
with the optional extra ``report`` (``pip install -e '.[report]'``), imported only
for this format.

The key is checked against the certificate before anything is signed: a PDF signed
with another key than its certificate names would fail every validator, and is
refused here with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ReportError
from ._tables import (
    exceptions_table,
    rotations_table,
    signing_keys_table,
    summary_table,
    tally_more,
    tally_table,
    verification_table,
)

__all__ = ["PdfSigning", "Pkcs11Key", "check_key_matches_cert", "render_pdf", "sign_pdf"]

_STATUS = {"met": "met", "not_met": "NOT MET", "cannot_attest": "cannot attest"}


@dataclasses.dataclass(frozen=True)
class Pkcs11Key:
    """A signing key held in a PKCS#11 token (an HSM): the module, the token's label,
    the key pair's label and the user PIN (never shown). EC P-256 and RSA keys; the
    digest is made in this process and the token signs it (``CKM_ECDSA``), as SoftHSM2
    has no combined hash-and-sign mechanism for EC."""

    module: Path
    token: str
    key_label: str
    pin: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class PdfSigning:
    """How to sign: a PEM (or DER) private key file or a :class:`Pkcs11Key`, and its
    certificate; optional chain, optional key password (never shown), optional RFC 3161
    timestamp authority."""

    key: Path | None
    cert: Path
    chain: tuple[Path, ...] = ()
    password: bytes | None = dataclasses.field(default=None, repr=False)
    tsa_url: str | None = None
    pkcs11: Pkcs11Key | None = None


def _need_extra() -> ReportError:
    return ReportError(
        "PDF reports need reportlab and pyHanko, which are not installed.",
        hint="Install the optional extra: pip install -e '.[report]' (or choose "
        "--format json, csv or html).",
    )


def render_pdf(model: dict[str, Any]) -> bytes:
    """The unsigned PDF of a report model."""
    try:
        from reportlab.graphics.charts.barcharts import VerticalBarChart
        from reportlab.graphics.shapes import Drawing, String
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
        from reportlab.lib.units import mm
        from reportlab.platypus import (
            KeepTogether,
            PageBreak,
            Paragraph,
            SimpleDocTemplate,
            Spacer,
            Table,
            TableStyle,
        )
    except ImportError:
        raise _need_extra() from None
    from xml.sax.saxutils import escape

    styles = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=styles["BodyText"], fontSize=8, leading=10)
    alert = ParagraphStyle(
        "alert",
        parent=styles["BodyText"],
        textColor=colors.HexColor("#7f1010"),
        backColor=colors.HexColor("#fdecea"),
        borderColor=colors.HexColor("#c62828"),
        borderWidth=1.5,
        borderPadding=6,
        fontName="Helvetica-Bold",
        spaceAfter=10,
    )

    def p(text: Any, style: ParagraphStyle = small) -> Paragraph:
        return Paragraph(escape("" if text is None else str(text)), style)

    def table(
        headers: list[str], rows: list[list[Any]], widths: list[float] | None = None
    ) -> Table:
        def cell(c: Any) -> Any:  # a list: one paragraph per item (a Paragraph drops \n)
            return [p(x) for x in c] if isinstance(c, list) else p(c)

        data = [[p(h) for h in headers]] + ([[cell(c) for c in r] for r in rows] or [[p("none")]])
        t = Table(data, colWidths=widths, repeatRows=1)
        t.setStyle(
            TableStyle(
                [
                    ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#c5ccd3")),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f6f9")),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ]
            )
        )
        return t

    def chart(title: str, items: list[tuple[str, float]], color: str) -> Drawing:
        d = Drawing(82 * mm, 55 * mm)
        d.add(String(0, 52 * mm, title, fontSize=8))
        if not items:
            d.add(String(10 * mm, 25 * mm, "no data", fontSize=8))
            return d
        c = VerticalBarChart()
        c.x, c.y, c.width, c.height = 10 * mm, 8 * mm, 70 * mm, 40 * mm
        c.data = [[v for _, v in items]]
        every = max(1, len(items) // 8)
        c.categoryAxis.categoryNames = [
            (k[5:] if len(k) == 10 and k[4] == "-" else k[:10]) if i % every == 0 else ""
            for i, (k, _) in enumerate(items)
        ]
        c.categoryAxis.labels.fontSize = 5
        c.categoryAxis.labels.angle = 45
        c.categoryAxis.labels.boxAnchor = "ne"
        c.valueAxis.labels.fontSize = 6
        c.valueAxis.valueMin = 0
        c.bars[0].fillColor = colors.HexColor(color)
        c.bars[0].strokeColor = None
        d.add(c)
        return d

    period, totals, att = model["period"], model["totals"], model["attestation"]
    story: list[Any] = [
        p(f"LLM usage compliance report: {period['from']} to {period['to']}", styles["Title"]),
        p(
            f"Generated {model['generated_at']} by {model['generator']} from "
            f"{model['log']['path']}; schema {model['schema_version']}."
        ),
        Spacer(1, 4 * mm),
    ]
    v = model["integrity"]["verify"]
    if not att["log_intact"]:
        story.append(p(att["statements"][0], alert))
        rest = att["statements"][1:]
    else:
        story.append(
            p(
                f"Audit log verified: {v['records']} records, {v['checkpoints']} checkpoints, "
                f"root {v['root']}.",
                styles["BodyText"],
            )
        )
        rest = att["statements"]
    if rest:
        story.append(p("This report cannot attest:", styles["Heading3"]))
        story.extend(p(f"- {s}") for s in rest)
    story += [
        p("Summary", styles["Heading2"]),
        table(*summary_table(model)),
        PageBreak(),
        p("Controls", styles["Heading1"]),
    ]
    for fw in model["controls"]:
        rows = [
            [
                c["id"],
                c["title"],
                _STATUS[c["status"]],
                [f"[{_STATUS[e['status']]}] {e['query']}: {e['statement']}" for e in c["evidence"]],
            ]
            for c in fw["controls"]
        ]
        story += [
            p(f"{fw['name']} ({fw['version']})", styles["Heading2"]),
            table(
                ["control", "title", "status", "evidence"],
                rows,
                [18 * mm, 40 * mm, 20 * mm, 100 * mm],
            ),
        ]
    day = model["timeline"]["day"]
    denials = list(totals["denials_by"].items())[:20]
    findings = list(model["dlp"]["findings_by_kind"].items())[:20]
    charts = [
        chart("Calls per day", [(d["day"], float(d["calls"])) for d in day], "#3f6fb5"),
        chart("Cost per day (USD)", [(d["day"], float(d["usd"])) for d in day], "#2e7d32"),
        chart("Denials by policy", [(k, float(n)) for k, n in denials], "#c62828"),
        chart("DLP findings by kind", [(k, float(n)) for k, n in findings], "#8d6e00"),
    ]
    story += [
        PageBreak(),
        p("Activity", styles["Heading1"]),
        KeepTogether(Table([[charts[0], charts[1]], [charts[2], charts[3]]])),
    ]
    if period["days_without_records"]:
        story.append(p("Days without records: " + ", ".join(period["days_without_records"])))

    def tallies(title: str, rows: list[dict[str, Any]]) -> list[Any]:
        more = tally_more(rows)  # the table stops at TALLY_LIMIT rows: say so
        return [p(title, styles["Heading2"]), table(*tally_table(rows))] + (
            [p(more)] if more else []
        )

    story += tallies("By principal", model["by_principal"])
    story += tallies("By team", model["by_team"])
    story += tallies("By model", model["by_model"])
    story += [
        p("Failures by reason", styles["Heading2"]),
        table(["reason", "count"], [list(kv) for kv in totals["failures_by_reason"].items()]),
        p("DLP findings by kind", styles["Heading2"]),
        table(["kind", "count"], [list(kv) for kv in findings]),
        p("Policy revisions in force", styles["Heading2"]),
        table(
            ["revision", "commit", "first seen", "last seen", "calls in period"],
            [
                [
                    r["revision"][:16],
                    (r["commit"] or "")[:12],
                    r["first_seen"],
                    r["last_seen"],
                    r["calls_in_period"],
                ]
                for r in model["policy_revisions"]
            ],
        ),
        p("Exceptions (unsafe settings used)", styles["Heading2"]),
        table(*exceptions_table(model)),
        PageBreak(),
        p("Appendix: log integrity", styles["Heading1"]),
        table(*verification_table(model)),
        p(f"Root of the whole log: {v['root']}"),
        p("Signing keys", styles["Heading2"]),
        table(*signing_keys_table(model)),
        p("Key rotations", styles["Heading2"]),
        table(*rotations_table(model)),
        p("Checkpoint roots (the last of each day)", styles["Heading2"]),
        table(
            ["day", "tree size", "root", "key"],
            [
                [c["day"], c["size"], c["root"], c["key"]]
                for c in model["integrity"]["checkpoints_by_day"]
            ],
            [22 * mm, 20 * mm, 95 * mm, 35 * mm],
        ),
    ]
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        title=f"Compliance report {period['from']} to {period['to']}",
        author=model["generator"],
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )
    doc.build(story)
    return buf.getvalue()


def check_key_matches_cert(signing: PdfSigning) -> None:
    """Refuse a key whose public half is not the certificate's (a file key, or the
    token's public key object of the same label)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(path: Path, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ReportError(
                f"Cannot read the PDF signing {what} {path} ({exc.strerror}).",
                hint=f"Pass --sign-{what} a readable PEM file.",
            ) from None

    cert_bytes = read(signing.cert, "cert")
    try:
        cert = (
            x509.load_pem_x509_certificate(cert_bytes)
            if b"-----BEGIN" in cert_bytes
            else x509.load_der_x509_certificate(cert_bytes)
        )
    except ValueError:
        raise ReportError(
            f"The PDF signing certificate {signing.cert} is not a PEM or DER certificate.",
            hint="Pass --sign-cert the signer's X.509 certificate.",
        ) from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    cert_spki = cert.public_key().public_bytes(der, fmt)
    if signing.pkcs11 is not None:
        with _pkcs11_session(signing.pkcs11) as session:
            key_spki = _token_public_key(session, signing.pkcs11)
        where = f"PKCS#11 key {signing.pkcs11.key_label!r} in token {signing.pkcs11.token!r}"
        if key_spki != cert_spki:
            raise ReportError(
                f"The {where} does not match the certificate {signing.cert} (their public "
                "keys differ): every validator would reject the signature.",
                hint="Pass the certificate issued for that key, or the key's label.",
            )
        return
    if signing.key is None:
        raise ReportError(
            "No PDF signing key was given.", hint="Pass --sign-key, or a PKCS#11 key."
        )
    key_bytes = read(signing.key, "key")
    try:
        load = (
            serialization.load_pem_private_key
            if b"-----BEGIN" in key_bytes
            else serialization.load_der_private_key
        )
        key = load(key_bytes, password=signing.password)
    except (ValueError, TypeError):
        raise ReportError(
            f"The PDF signing key {signing.key} cannot be loaded (not a private key, or a "
            "wrong or missing password).",
            hint="Pass --sign-key the private key of --sign-cert (with its password in "
            "the variable --sign-key-password-env names, if it has one).",
        ) from None
    if key.public_key().public_bytes(der, fmt) != cert_spki:
        raise ReportError(
            f"The PDF signing key {signing.key} does not match the certificate "
            f"{signing.cert} (their public keys differ): every validator would reject "
            "the signature.",
            hint="Pass the private key the certificate was issued for.",
        )


@contextlib.contextmanager
def _pkcs11_session(hsm: Pkcs11Key) -> Iterator[Any]:
    try:
        import pkcs11
    except ImportError:
        raise ReportError(
            "A PKCS#11 signing key needs python-pkcs11, which is not installed.",
            hint="Install the optional extra: pip install -e '.[hsm]'.",
        ) from None
    try:
        token = pkcs11.lib(str(hsm.module)).get_token(token_label=hsm.token)
        session = token.open(user_pin=hsm.pin)
    except Exception as exc:  # python-pkcs11's errors share no useful base: name the class
        raise ReportError(
            f"Cannot open the PKCS#11 token {hsm.token!r} with module {hsm.module} "
            f"({type(exc).__name__}).",  # never the PIN
            hint="Check the module path, the token label and the PIN variable.",
        ) from None
    try:
        yield session
    finally:
        session.close()


def _token_public_key(session: Any, hsm: Pkcs11Key) -> bytes:
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_ec_public_key

    try:
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=hsm.key_label)
    except Exception as exc:
        raise ReportError(
            f"The PKCS#11 token {hsm.token!r} has no single public key labelled "
            f"{hsm.key_label!r} ({type(exc).__name__}).",
            hint="Pass the label of the key pair the certificate was issued for.",
        ) from None
    if pub.key_type == KeyType.EC:
        from cryptography.hazmat.primitives import serialization

        # python-pkcs11 gives the point with named-curve parameters; normalise via cryptography
        spki = serialization.load_der_public_key(encode_ec_public_key(pub))
        return spki.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if pub.key_type == KeyType.RSA:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
        return (
            rsa.RSAPublicNumbers(e, n)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    raise ReportError(
        f"The PKCS#11 key {hsm.key_label!r} is of type {pub.key_type.name}; PDF signing "
        "takes EC P-256 or RSA keys here.",
        hint="Use an EC P-256 or RSA key pair.",
    )


def sign_pdf(pdf: bytes, signing: PdfSigning) -> bytes:
    """``pdf`` signed (PAdES B-B; B-T with ``signing.tsa_url``)."""
    try:
        from pyhanko.sign import signers
    except ImportError:
        raise _need_extra() from None
    check_key_matches_cert(signing)
    if signing.pkcs11 is not None:
        with _pkcs11_session(signing.pkcs11) as session:
            return _sign(pdf, signing, _hsm_signer(session, signing))
    signer = signers.SimpleSigner.load(  # type: ignore[no-untyped-call]
        str(signing.key),
        str(signing.cert),
        ca_chain_files=[str(c) for c in signing.chain] or None,
        key_passphrase=signing.password,
    )
    if signer is None:  # pyHanko logs why and returns None
        raise ReportError(
            f"pyHanko could not load the signing key {signing.key} with {signing.cert}.",
            hint="Pass a PEM private key and its PEM certificate.",
        )
    return _sign(pdf, signing, signer)


def _hsm_signer(session: Any, signing: PdfSigning) -> Any:
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko.sign.pkcs11 import PKCS11Signer

    assert signing.pkcs11 is not None
    return PKCS11Signer(
        session,
        signing_cert=load_cert_from_pemder(str(signing.cert)),  # type: ignore[no-untyped-call]
        ca_chain=[load_cert_from_pemder(str(c)) for c in signing.chain],  # type: ignore[no-untyped-call]
        key_label=signing.pkcs11.key_label,
        # hash here, sign the digest in the token (CKM_ECDSA / CKM_RSA_PKCS)
        use_raw_mechanism=True,
    )


def _sign(pdf: bytes, signing: PdfSigning, signer: Any) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers, timestamps

    meta = signers.PdfSignatureMetadata(
        field_name="ReportSignature",
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason="secure-ds compliance report",
    )
    stamper = timestamps.HTTPTimeStamper(signing.tsa_url) if signing.tsa_url else None
    out = io.BytesIO()
    try:
        signers.sign_pdf(
            IncrementalPdfFileWriter(io.BytesIO(pdf)),
            meta,
            signer=signer,
            timestamper=stamper,
            output=out,
        )
    except Exception as exc:  # pyHanko's errors share no base; the TSA's network ones too
        raise ReportError(
            f"Signing the PDF failed ({type(exc).__name__}: {exc}).",
            hint="Check the timestamp authority URL (--tsa-url) and the signing key.",
        ) from None
    return out.getvalue()
