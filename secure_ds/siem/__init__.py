"""SIEM export: the audit log shipped to an OpenTelemetry Collector, at least once.

Each record becomes an OTLP log record (OCSF API Activity fields as attributes, the
line exactly as logged as its body, the event id as ``log.record.uid``), a span with
the OpenTelemetry GenAI semantic conventions, and metrics (token usage, latency, calls,
denials, cost). See :mod:`secure_ds.siem._shipper` for the delivery invariants.
"""

from ._cursor import Cursor, cursor_path_for
from ._mapping import OCSF_VERSION, genai_attributes, ocsf_attributes
from ._shipper import Shipper, ShipperStatus, SiemExportError

__all__ = [
    "OCSF_VERSION",
    "Cursor",
    "Shipper",
    "ShipperStatus",
    "SiemExportError",
    "cursor_path_for",
    "genai_attributes",
    "ocsf_attributes",
]
