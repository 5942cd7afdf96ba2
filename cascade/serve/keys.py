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
_STR = "tag:yaml.org,2002:str"
_SHAPE = "write `tenant: key` or `tenant: [key, ...]`"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Keys:
    """API key digests and their tenants.

    Errors name the file (``where``) and the line (an entry's number for a mapping given in
    code) and what is wrong, never a value: a file written the wrong way round (``key: tenant``)
    has keys where tenants go, so tenant names are not shown either."""

    def __init__(self, tenants: Mapping[str, str | list[str]], where: str = "keys") -> None:
        self._digests: dict[bytes, str] = {}
        self._at: dict[bytes, str] = {}  # digest -> where it was given (for a repeat's error)
        for n, (tenant, keys) in enumerate(tenants.items(), 1):
            self._add(tenant, keys, f"{where}: entry {n}", f"entry {n}")

    def _add(self, tenant: object, keys: object, at: str, label: str) -> None:
        """One tenant's keys; ``at``: where errors say it is, ``label``: what a repeat calls it."""
        if not isinstance(tenant, str) or not tenant:
            raise ConfigurationError(f"{at}: the tenant is not a non-empty string (value hidden); {_SHAPE}")
        if _HASHED.match(tenant):
            raise ConfigurationError(f"{at}: a key digest stands where the tenant goes (hidden); {_SHAPE}")
        listed = [keys] if isinstance(keys, str) else keys
        if not isinstance(listed, list) or not listed:
            raise ConfigurationError(f"{at}: the tenant's value is not a key or a list of keys; {_SHAPE}")
        for key in listed:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"{at}: a key is not a non-empty string (value hidden); quote it")
            match = _HASHED.match(key)
            d = bytes.fromhex(match.group(1)) if match else digest(key)
            if d in self._digests:
                raise ConfigurationError(
                    f"{at}: repeats a key of {self._at[d]} (value hidden): one key, one tenant"
                    f" (a file written `key: tenant` looks like this: {_SHAPE})"
                )
            self._digests[d] = tenant
            self._at[d] = label

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keys:
        """Read a keys file (see the module docstring)."""
        with open(path, encoding="utf-8") as f:
            return cls.parse(f.read(), str(path))

    @classmethod
    def parse(cls, text: str, where: str) -> Keys:
        """Keys from YAML ``text`` (a file's, or ``$CASCADE_SERVE_KEYS``); errors name ``where`` and
        the line, never a key (nor a tenant: written the wrong way round, it is a key)."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:  # its text quotes the line: only where it is and its kind
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigurationError(f"{where}{line}: not YAML ({type(exc).__name__})") from None
        if not isinstance(root, yaml.MappingNode) or not root.value:
            raise ConfigurationError(f"{where}: keys map tenants to keys; {_SHAPE}")
        keys = cls({}, where)
        seen: dict[str, int] = {}
        for name, value in root.value:
            line = name.start_mark.line + 1
            at = f"{where}:{line}"
            tenant = _scalar(name)
            if isinstance(tenant, str) and tenant in seen:
                raise ConfigurationError(
                    f"{at}: repeats the tenant of line {seen[tenant]} (value hidden): give one entry"
                    " per tenant, its keys as a list"
                )
            if isinstance(tenant, str):
                seen[tenant] = line
            keys._add(tenant, _keys(value), at, f"line {line}")
        return keys

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


def _scalar(node: yaml.Node) -> object:
    """A YAML string's text; None for anything else (a number, a mapping, null: not a name or key)."""
    return node.value if isinstance(node, yaml.ScalarNode) and node.tag == _STR else None


def _keys(node: yaml.Node) -> list[object] | None:
    """A tenant's keys as written: a list (a lone key or a sequence), None for null or a mapping."""
    if isinstance(node, yaml.SequenceNode):
        return [_scalar(v) for v in node.value]
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null":
        return [_scalar(node)]  # a number or a boolean is no key: said so, not shown
    return None


__all__ = ["Keys", "digest"]
