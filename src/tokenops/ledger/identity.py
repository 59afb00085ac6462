"""Proof that a gateway serves a given ledger, for a CLI that is about to send it the admin key.

Each ledger holds a random secret (created with it, never shown). A gateway that serves the ledger answers
``GET /readyz?challenge=NONCE`` with ``identity = HMAC-SHA256(secret, "tokenops-identity:" + NONCE)``. A CLI
with access to the same ledger computes the same value and compares: whatever else listens on the configured
port cannot, so the CLI never sends the admin key to it (nor believes its answer).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    return secrets.token_hex(32)


def new_challenge() -> str:
    return secrets.token_urlsafe(24)


def identity_proof(secret: str, challenge: str) -> str:
    return hmac.new(secret.encode(), b"tokenops-identity:" + challenge.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, challenge: str, proof: object) -> bool:
    return isinstance(proof, str) and hmac.compare_digest(identity_proof(secret, challenge), proof)
