"""``SecureDeepSeek`` and ``AsyncSecureDeepSeek``: ``openai.OpenAI`` with the guard chain.

They *are* openai clients (subclasses), configured with an httpx2 client whose
transport runs the guard chain, so every SDK feature works unchanged and every
response is the SDK's own type::

    from secure_ds import SecureDeepSeek

    client = SecureDeepSeek()                       # settings from the environment
    reply = client.chat.completions.create(
        model=client.default_model,
        messages=[{"role": "user", "content": "Hello"}],
    )

What differs from ``openai.OpenAI``: the bearer token is a short-lived
certificate-bound JWT (or the DeepSeek API key in ``api-key`` mode) over mutual TLS;
retries (5 attempts, backoff 0.3 s with jitter, ``Retry-After`` honoured), the circuit
breaker and timeouts (connect 3.05 s, read 30 s) are secure-ds's; errors are
``SecureDSError`` subclasses that also derive from the matching ``openai`` error; and
every call leaves one audit record. ``with_options(max_retries=N)`` means N retries
(N + 1 attempts).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from openai import BaseModel

from ._secret import Secret
from .audit import AuditLog
from .config import Settings, check_endpoint
from .errors import ConfigError
from .guard import AsyncGuardedTransport, Classifier, Guard, GuardedTransport, Meter, PolicyDecider
from .identity import (
    AsyncRotatingTransport,
    ClientPair,
    RequestSigner,
    RotatingIdentity,
    RotatingTransport,
    TokenProvider,
    build_ssl_context,
    token_provider_from_settings,
)
from .identity._httpsig import SigningKey
from .policy import CedarDecider, PolicyStore

if TYPE_CHECKING:
    from .fhe._client import AsyncFhe, Fhe

__all__ = ["AsyncSecureDeepSeek", "BalanceInfo", "SecureDeepSeek", "UserBalance"]

# The SDK insists on an api_key; the real credential is set per request by the guard.
_PLACEHOLDER_KEY = "secure-ds-managed-credential"
_MAX_ATTEMPTS_EXTENSION = "secure_ds.max_attempts"
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
# Uncompressed responses, so the guard can hash and read them as they arrive.
_WIRE_HEADERS = {"accept-encoding": "identity"}


class BalanceInfo(BaseModel):
    currency: str
    total_balance: str
    granted_balance: str
    topped_up_balance: str


class UserBalance(BaseModel):
    """DeepSeek's ``GET /user/balance``."""

    is_available: bool
    balance_infos: list[BalanceInfo]


class _SecureHttpClient(httpx2.Client):
    secure_guard: Guard
    secure_identity: RotatingIdentity | None


class _AsyncSecureHttpClient(httpx2.AsyncClient):
    secure_guard: Guard
    secure_identity: RotatingIdentity | None


class _RotationCheckedTransport(GuardedTransport):
    """Looks for rotated certificate files *before* the guard chain asks for a token,
    so the call that notices a rotation already carries a token bound to the new
    certificate and goes out on a connection that presents it."""

    def __init__(
        self, guard: Guard, inner: httpx2.BaseTransport, identity: RotatingIdentity
    ) -> None:
        super().__init__(guard, inner)
        self._identity = identity

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self._identity.check()
        return super().handle_request(request)


class _AsyncRotationCheckedTransport(AsyncGuardedTransport):
    def __init__(
        self, guard: Guard, inner: httpx2.AsyncBaseTransport, identity: RotatingIdentity
    ) -> None:
        super().__init__(guard, inner)
        self._identity = identity

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        # on the loop: almost always a clock compare; two stat calls once per
        # SECURE_DS_CERT_CHECK_INTERVAL; reading a rotated pair (about a millisecond)
        # only when the files changed
        self._identity.check()
        return await super().handle_async_request(request)


def _follow_rotation(guard: Guard, identity: RotatingIdentity) -> None:
    """Keep the guard's view of the certificate in step with the files."""

    def rotated(pair: ClientPair) -> None:
        # a token bound to the old certificate would be refused (RFC 8705): drop it
        guard.token_provider.on_certificate_rotated(pair.cert_der)
        if guard.signer is not None and isinstance(pair.private_key, SigningKey):
            # RFC 9421 signatures with the validated new key, keyid = its thumbprint;
            # set before cert_thumbprint, so the two never disagree (and the files,
            # which may be mid-rotation again, are never re-read)
            guard.signer = RequestSigner(pair.private_key, keyid=pair.thumbprint)
        guard.cert_thumbprint = pair.thumbprint  # what audit records name from now on
        guard._identity_cache = None

    identity.subscribe(rotated)


def _build_guard(
    settings: Settings,
    *,
    token_provider: TokenProvider | None,
    classifier: Classifier | None,
    decider: PolicyDecider | None,
    meter: Meter | None,
    identity: RotatingIdentity | None,
) -> Guard:
    pair = identity.current() if identity is not None else None
    owned: list[Any] = []
    if decider is None and settings.policy_dir is not None:
        # raises PolicyError (a ConfigError) when the folder does not load: a client
        # never starts with a broken policy set
        decider = CedarDecider(
            PolicyStore(settings.policy_dir, reload_interval=settings.policy_reload)
        )
        owned.append(decider)
    if meter is None and settings.budgets is not None:
        from .cost import PriceTable
        from .cost._meter import BudgetMeter  # lazily: it imports the guard's call model

        meter = BudgetMeter.from_settings(settings, PriceTable.load(settings.pricing))
        owned.append(meter)
    signer = None
    if pair is not None and settings.signs_requests:
        # from the pair the connections use, not a second read of files that may rotate
        signer = RequestSigner.for_key(
            pair.private_key, pair.thumbprint, where=str(settings.client_key)
        )
    guard = Guard.create(
        settings,
        token_provider=token_provider or token_provider_from_settings(settings),
        # path, fsync policy, signing key, checkpoint cadence and record-size limit
        audit_log=AuditLog.from_settings(settings),
        cert_thumbprint=pair.thumbprint if pair is not None else None,
        classifier=classifier,
        decider=decider,
        meter=meter,
        signer=signer,
    )
    guard.owned.extend(owned)
    if identity is not None and pair is not None:
        # the provider read the certificate file itself: bind it to the pair in use
        guard.token_provider.on_certificate_rotated(pair.cert_der)
        _follow_rotation(guard, identity)
    if settings.otlp_endpoint is not None and settings.otlp_shipper == "thread":
        # SIEM export off the call path: a daemon thread reads the audit log and ships
        # it (secure_ds.siem); imported lazily, so clients without export never load it
        from .siem import Shipper

        shipper = Shipper.from_settings(settings, in_process=True)
        shipper.start()
        guard.owned.append(shipper)
    return guard


def _resolve(settings: Settings | None, api_key: object, base_url: object) -> Settings:
    """Settings for a new client, with an explicit ``api_key``/``base_url`` applied."""
    resolved = settings if settings is not None else Settings.from_env()
    if isinstance(api_key, str) and api_key and api_key != _PLACEHOLDER_KEY:
        resolved = resolved.replace(api_key=Secret(api_key))
    if _given(base_url):
        resolved = resolved.replace(endpoint=str(base_url).rstrip("/"), api_version=None)
    return resolved


def _given(value: object) -> bool:
    return value is not None and not isinstance(value, openai.NotGiven)


@dataclass(frozen=True)
class _Setup:
    """What both clients hand to the openai constructor."""

    guard: Guard
    http_client: Any  # _SecureHttpClient or _AsyncSecureHttpClient
    base_url: str
    max_retries: int
    timeout: Any


_TLS = RotatingIdentity | ssl.SSLContext  # with a client certificate: one that rotates


def _http_transport(ctx: ssl.SSLContext) -> httpx2.BaseTransport:
    return httpx2.HTTPTransport(verify=ctx, limits=_LIMITS, trust_env=False)


def _async_http_transport(ctx: ssl.SSLContext) -> httpx2.AsyncBaseTransport:
    return httpx2.AsyncHTTPTransport(verify=ctx, limits=_LIMITS, trust_env=False)


def _new_sync_client(guard: Guard, tls: _TLS) -> _SecureHttpClient:
    if isinstance(tls, RotatingIdentity):
        transport: GuardedTransport = _RotationCheckedTransport(
            guard, RotatingTransport(tls, _http_transport), tls
        )
    else:
        transport = GuardedTransport(guard, _http_transport(tls))
    client = _SecureHttpClient(
        transport=transport, follow_redirects=False, trust_env=False, headers=_WIRE_HEADERS
    )
    client.secure_guard = guard
    client.secure_identity = tls if isinstance(tls, RotatingIdentity) else None
    return client


def _new_async_client(guard: Guard, tls: _TLS) -> _AsyncSecureHttpClient:
    if isinstance(tls, RotatingIdentity):
        transport: AsyncGuardedTransport = _AsyncRotationCheckedTransport(
            guard, AsyncRotatingTransport(tls, _async_http_transport), tls
        )
    else:
        transport = AsyncGuardedTransport(guard, _async_http_transport(tls))
    client = _AsyncSecureHttpClient(
        transport=transport, follow_redirects=False, trust_env=False, headers=_WIRE_HEADERS
    )
    client.secure_guard = guard
    client.secure_identity = tls if isinstance(tls, RotatingIdentity) else None
    return client


def _setup(
    *,
    http_client: object,
    new_client: Callable[[Guard, _TLS], object],
    settings: Settings | None,
    token_provider: TokenProvider | None,
    classifier: Classifier | None,
    decider: PolicyDecider | None,
    meter: Meter | None,
    api_key: object,
    base_url: object,
    max_retries: object,
    timeout: object,
) -> _Setup:
    """The guard and the SDK's constructor arguments, for both clients.

    With ``http_client`` (a secure-ds client handed over by ``with_options``/``copy``)
    the guard is shared; otherwise a new guard and ``new_client(guard, ssl_context)``
    are built from the settings. With a client certificate the TLS material is a
    :class:`RotatingIdentity`, so rotated files are picked up without a restart.
    """
    if http_client is not None:
        guard = getattr(http_client, "secure_guard", None)
        if not isinstance(guard, Guard):
            raise ConfigError(
                "http_client",
                "a client not built by secure-ds would bypass the guard chain",
                fix="Leave http_client out; secure-ds builds its own from the settings.",
            )
        if _given(base_url):  # a copy may point elsewhere, under the same rule
            check_endpoint(str(base_url), variable="base_url")
        url = str(base_url) if _given(base_url) else guard.settings.base_url
    else:
        resolved = _resolve(settings, api_key, base_url)
        identity = RotatingIdentity(resolved) if resolved.client_cert is not None else None
        guard = _build_guard(
            resolved,
            token_provider=token_provider,
            classifier=classifier,
            decider=decider,
            meter=meter,
            identity=identity,
        )
        http_client = new_client(
            guard, identity if identity is not None else build_ssl_context(resolved)
        )
        url = resolved.base_url
    s = guard.settings
    return _Setup(
        guard=guard,
        http_client=http_client,
        base_url=url,
        max_retries=max_retries if isinstance(max_retries, int) else s.max_attempts - 1,
        timeout=timeout
        if not isinstance(timeout, openai.NotGiven)
        else httpx2.Timeout(s.read_timeout, connect=s.connect_timeout),
    )


class _GuardedClient:
    """What both clients add to the SDK's: views of the guard they share."""

    guard: Guard

    @property
    def settings(self) -> Settings:
        return self.guard.settings

    @property
    def default_model(self) -> str:
        """``DEEPSEEK_MODEL`` (a pin such as ``@2026-10-17`` is recorded, not sent)."""
        return self.guard.settings.model

    @property
    def audit_path(self) -> Path:
        return self.guard.audit_log.path

    @property
    def certificate(self) -> RotatingIdentity | None:
        """The client certificate in use and its rotation (``None`` without mTLS):
        ``client.certificate.current()`` is the pair new connections present."""
        identity = getattr(getattr(self, "_client", None), "secure_identity", None)
        return identity if isinstance(identity, RotatingIdentity) else None


class SecureDeepSeek(_GuardedClient, openai.OpenAI):
    """A drop-in ``openai.OpenAI`` whose every call passes the guard chain."""

    guard: Guard

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        token_provider: TokenProvider | None = None,
        classifier: Classifier | None = None,
        decider: PolicyDecider | None = None,
        meter: Meter | None = None,
        http_client: httpx2.Client | None = None,
        api_key: Any = None,
        base_url: Any = openai.NOT_GIVEN,
        max_retries: int | openai.NotGiven = openai.NOT_GIVEN,
        timeout: Any = openai.NOT_GIVEN,
        **kwargs: Any,
    ) -> None:
        setup = _setup(
            http_client=http_client,
            new_client=_new_sync_client,
            settings=settings,
            token_provider=token_provider,
            classifier=classifier,
            decider=decider,
            meter=meter,
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.guard = setup.guard
        super().__init__(
            api_key=_PLACEHOLDER_KEY,
            base_url=setup.base_url,
            http_client=setup.http_client,
            max_retries=setup.max_retries,
            timeout=setup.timeout,
            **kwargs,
        )

    def user_balance(self) -> UserBalance:
        """DeepSeek's account balance (``GET /user/balance``), through the guard chain."""
        return self.get("/user/balance", cast_to=UserBalance)

    @cached_property
    def fhe(self) -> Fhe:
        """Encrypted inference on small models (TenSEAL CKKS): ``client.fhe.infer(...)``.

        The secret key stays in this process; requests go through the guard chain.
        TenSEAL is imported on first use.
        """
        from .fhe._client import Fhe

        return Fhe(self)

    def _prepare_request(self, request: httpx2.Request) -> None:
        super()._prepare_request(request)
        request.extensions[_MAX_ATTEMPTS_EXTENSION] = self.max_retries + 1

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.guard.close()


class AsyncSecureDeepSeek(_GuardedClient, openai.AsyncOpenAI):
    """A drop-in ``openai.AsyncOpenAI`` whose every call passes the guard chain."""

    guard: Guard

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        token_provider: TokenProvider | None = None,
        classifier: Classifier | None = None,
        decider: PolicyDecider | None = None,
        meter: Meter | None = None,
        http_client: httpx2.AsyncClient | None = None,
        api_key: Any = None,
        base_url: Any = openai.NOT_GIVEN,
        max_retries: int | openai.NotGiven = openai.NOT_GIVEN,
        timeout: Any = openai.NOT_GIVEN,
        **kwargs: Any,
    ) -> None:
        setup = _setup(
            http_client=http_client,
            new_client=_new_async_client,
            settings=settings,
            token_provider=token_provider,
            classifier=classifier,
            decider=decider,
            meter=meter,
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
        )
        self.guard = setup.guard
        super().__init__(
            api_key=_PLACEHOLDER_KEY,
            base_url=setup.base_url,
            http_client=setup.http_client,
            max_retries=setup.max_retries,
            timeout=setup.timeout,
            **kwargs,
        )

    async def user_balance(self) -> UserBalance:
        return await self.get("/user/balance", cast_to=UserBalance)

    @cached_property
    def fhe(self) -> AsyncFhe:
        """Encrypted inference on small models: ``await client.fhe.infer(...)``."""
        from .fhe._client import AsyncFhe

        return AsyncFhe(self)

    async def _prepare_request(self, request: httpx2.Request) -> None:
        await super()._prepare_request(request)
        request.extensions[_MAX_ATTEMPTS_EXTENSION] = self.max_retries + 1

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.guard.close()
