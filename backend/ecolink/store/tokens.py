"""Secrets and ids: API keys and session tokens are kept as SHA-256 hashes only."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX_LEN = 12  # "eco_" + 8 characters, shown by `keys list`


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return "eco_" + secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
