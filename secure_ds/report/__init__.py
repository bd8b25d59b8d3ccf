"""Compliance reports from the audit log (``secure-ds report export``).

Control mappings (``audit/controls/*.toml``) name evidence queries; one streaming pass
over a verified log answers them, and the report is written atomically as JSON (the
model, ``audit/report.schema.json``), CSV (one row per call), self-contained HTML, a
PDF signed with pyHanko (PAdES), or OSCAL assessment results (compliance-trestle).
"""

from ._aggregate import Aggregate, Period, aggregate_log
from ._controls import Control, Framework, builtin_controls_dir, load_controls
from ._evidence import EVIDENCE_QUERIES, Evidence
from ._export import CSV_COLUMNS, FORMATS, atomic_output, export_report
from ._model import REPORT_SCHEMA_VERSION, build_report, parse_date
from ._oscal import render_oscal
from ._pdf import PdfSigning, Pkcs11Key, render_pdf, sign_pdf

__all__ = [
    "CSV_COLUMNS",
    "EVIDENCE_QUERIES",
    "FORMATS",
    "REPORT_SCHEMA_VERSION",
    "Aggregate",
    "Control",
    "Evidence",
    "Framework",
    "PdfSigning",
    "Period",
    "Pkcs11Key",
    "aggregate_log",
    "atomic_output",
    "build_report",
    "builtin_controls_dir",
    "export_report",
    "load_controls",
    "parse_date",
    "render_oscal",
    "render_pdf",
    "sign_pdf",
]
