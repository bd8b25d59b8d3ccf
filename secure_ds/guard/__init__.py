"""The guard chain every call passes through, and its pluggable stages."""

from ._call import Action, Call, Classification, Decision, Identity, Metering
from ._chain import Guard
from ._resilience import BreakerRegistry, CircuitBreaker, RetryPolicy
from ._stages import (
    AllowAll,
    Classifier,
    Enforcer,
    Meter,
    NoClassification,
    PolicyDecider,
    Unmetered,
)
from ._transport import AsyncGuardedTransport, GuardedTransport

__all__ = [
    "Action",
    "AllowAll",
    "AsyncGuardedTransport",
    "BreakerRegistry",
    "Call",
    "CircuitBreaker",
    "Classification",
    "Classifier",
    "Decision",
    "Enforcer",
    "Guard",
    "GuardedTransport",
    "Identity",
    "Meter",
    "Metering",
    "NoClassification",
    "PolicyDecider",
    "RetryPolicy",
    "Unmetered",
]
