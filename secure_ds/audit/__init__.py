"""The audit trail: one signed, hash-chained record per call (permit, deny or failure),
durable before return, with signed Merkle checkpoints; and its verification.

``secure_ds.audit.merkle`` holds the RFC 9162 tree functions (roots and proofs).
"""

from ._export import export_log
from ._hybrid import HybridSigner, load_pq_signer
from ._log import AuditLog, encode_record
from ._pkcs11 import Pkcs11Signer
from ._record import RECORD_SCHEMA, build_record
from ._seal import (
    AuditorPrivateKey,
    AuditorPublicKey,
    Sealer,
    Unsealed,
    generate_auditor_key,
    load_auditor_private_key,
    load_auditor_public_key,
    unseal,
    unseal_record,
)
from ._signing import (
    PublicKey,
    Signer,
    SoftwareSigner,
    default_key_path,
    default_signer,
    generate_key_file,
    load_public_key,
    load_signer,
)
from ._verify import (
    RepairResult,
    VerifyResult,
    is_checkpoint_line,
    read_records,
    repair_log,
    verify_log,
)

__all__ = [
    "RECORD_SCHEMA",
    "AuditLog",
    "AuditorPrivateKey",
    "AuditorPublicKey",
    "HybridSigner",
    "Pkcs11Signer",
    "PublicKey",
    "RepairResult",
    "Sealer",
    "Signer",
    "SoftwareSigner",
    "Unsealed",
    "VerifyResult",
    "build_record",
    "default_key_path",
    "default_signer",
    "encode_record",
    "export_log",
    "generate_auditor_key",
    "generate_key_file",
    "is_checkpoint_line",
    "load_auditor_private_key",
    "load_auditor_public_key",
    "load_pq_signer",
    "load_public_key",
    "load_signer",
    "read_records",
    "repair_log",
    "unseal",
    "unseal_record",
    "verify_log",
]
