"""The audit trail: one record per call (permit, deny or failure), durable before return."""

from ._log import AuditLog, encode_record
from ._record import RECORD_SCHEMA, build_record

__all__ = ["RECORD_SCHEMA", "AuditLog", "build_record", "encode_record"]
