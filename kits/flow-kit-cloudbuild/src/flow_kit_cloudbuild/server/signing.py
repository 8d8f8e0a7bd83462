"""Signing what a server process writes to a store the others read (Redis mode's sessions, jobs
and cancellations), so a record nobody of the deployment wrote is treated as absent. Below the
HTTP layer and the backends, which both use it."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


class Signer:
    """Signs what this server writes to a shared store and checks it when read back.

    Why: in Redis mode anyone who can write to Redis (a misconfigured network, a leaked
    password) could otherwise write a dashboard session for any token, queue a job, or cancel
    another tenant's build. Every gateway and worker of a deployment holds the same secret
    (``--secret-file``); a record without a valid signature is treated as absent. The parts are
    JSON-encoded as a list, so no choice of values makes two different records sign alike.
    """

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a Signer needs a non-empty secret")
        self._key = secret

    def sign(self, kind: str, *parts: Any) -> str:
        """The hex HMAC-SHA256 of ``kind`` and ``parts`` (JSON values)."""
        message = json.dumps([kind, *parts], separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def check(self, signature: Any, kind: str, *parts: Any) -> bool:
        """Whether ``signature`` is this server's for ``kind`` and ``parts`` (constant-time)."""
        if not isinstance(signature, str):
            return False
        try:
            expected = self.sign(kind, *parts)
        except (TypeError, ValueError):  # parts that are not JSON: nothing this server signed
            return False
        return hmac.compare_digest(signature, expected)
