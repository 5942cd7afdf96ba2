"""API keys and their tenants: ``Authorization: Bearer KEY`` -> the tenant, the request's budget key.

A keys file (``--keys FILE``, or the same text in ``$CASCADE_SERVE_KEYS``) is YAML, tenant -> key
or list of keys; a key is written as itself or, better, as its
SHA-256 (``sha256:<64 hex digits>``, so the file holds no usable secret)::

    acme: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    globex: [sk-globex-1, sk-globex-2]

Keys are kept only as digests; a presented key is hashed and looked up by its digest (what a
lookup's timing could reveal is about the digest, not the key). Keys are never logged.
Tenants are what per-key caps (``scope: key``) are counted by.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping

import yaml

from cascade.errors import ConfigurationError
from cascade.serve.errors import ApiError

_HASHED = re.compile(r"^sha256:([0-9a-f]{64})$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Keys:
    """API key digests and their tenants."""

    def __init__(self, tenants: Mapping[str, str | list[str]], where: str = "keys") -> None:
        self._digests: dict[bytes, str] = {}
        for tenant, keys in tenants.items():
            if not isinstance(tenant, str) or not tenant:
                raise ConfigurationError(f"{where}: a tenant is a non-empty string, not {tenant!r}")
            for key in [keys] if isinstance(keys, str) else keys:
                if not isinstance(key, str) or not key:
                    raise ConfigurationError(f"{where}: tenant {tenant!r}: a key is a non-empty string")
                match = _HASHED.match(key)
                d = bytes.fromhex(match.group(1)) if match else digest(key)
                if d in self._digests:
                    raise ConfigurationError(
                        f"{where}: tenant {tenant!r} repeats a key of {self._digests[d]!r}"
                    )
                self._digests[d] = tenant

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keys:
        """Read a keys file (see the module docstring)."""
        with open(path, encoding="utf-8") as f:
            return cls.parse(f.read(), str(path))

    @classmethod
    def parse(cls, text: str, where: str) -> Keys:
        """Keys from YAML ``text`` (a file's, or ``$CASCADE_SERVE_KEYS``); errors name ``where``,
        never a key."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{where}: not YAML ({type(exc).__name__})") from None
        if not isinstance(data, dict) or not data:
            raise ConfigurationError(f"{where}: keys map tenants to keys (tenant: key or [keys])")
        return cls(data, where)

    def __len__(self) -> int:
        return len(self._digests)

    def tenant(self, authorization: str | None) -> str:
        """The tenant of an ``Authorization`` header; :class:`ApiError` 401 when missing or wrong."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "You didn't provide an API key: send it as 'Authorization: Bearer YOUR_KEY'",
                code="invalid_api_key",
            )
        tenant = self._digests.get(digest(key))  # by digest: the lookup's timing says nothing of the key
        if tenant is not None:
            return tenant
        raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")


__all__ = ["Keys", "digest"]
