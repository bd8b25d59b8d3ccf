"""A local emulation of the DeepSeek API for demos, tests and benchmarks.

There is no internet here, and DeepSeek itself cannot be made to demand mutual TLS, so
the sandbox stands in for it: an HTTPS endpoint on 127.0.0.1 speaking DeepSeek's API
(``/chat/completions`` plain and streamed, ``/beta/completions``, ``/models``,
``/user/balance``, each also under ``/v1``), with its own throwaway CA, server
certificate and token-issuer key in a temporary directory::

    with Sandbox() as sb:
        settings = sb.client_settings("alice", roles=["engineer"])
        ...  # point a secure client at settings

Invariants (each covered by ``tests/integration/test_sandbox_server.py``):

* **No CA client certificate, no connection.** The TLS handshake requires a client
  certificate issued by the sandbox CA and valid now; anything else is refused
  before a byte of HTTP is read.
* **No valid bound token, no answer.** Every request needs ``Authorization: Bearer``
  with a JWT signed by the sandbox issuer using its one algorithm (ES256 or EdDSA;
  ``none``, HMAC and RSA are refused), with the sandbox's ``iss`` and ``aud``, in its
  validity window (30 s leeway, at most an hour long), carrying ``sub`` and ``jti``,
  and bound (RFC 8705 ``cnf.x5t#S256``) to the certificate presented on that very
  connection. Failures are 401s in DeepSeek's error shape naming the reason.
* **Injected faults come after authentication**, so they never hide an auth failure.
* **Content is deterministic**: derived only from the request and the caller's
  subject, so tests can assert on it and benchmarks compare like with like.
"""

from __future__ import annotations

from ._server import Sandbox
from .pki import LocalCA

__all__ = ["LocalCA", "Sandbox"]
