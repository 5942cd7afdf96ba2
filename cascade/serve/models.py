"""What a gateway serves: policy files, each a model ``cascade/<policy name>``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cascade.engine import Cascade
from cascade.errors import ConfigurationError

PREFIX = "cascade/"
DEMO = Path(__file__).resolve().parents[1] / "demo" / "demo.yaml"
"""The packaged demo policy (recorded GSM8K answers on replay tiers: offline, no key)."""


def policy_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself, or the ``*.yaml``/``*.yml`` files of a directory (sorted)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        if not files:
            raise ConfigurationError(f"{p}: no policy files (*.yaml, *.yml) in this directory")
        return files
    if not p.is_file():
        raise ConfigurationError(f"{p}: no such policy file or directory")
    return [p]


def load(path: str | os.PathLike[str]) -> dict[str, Cascade]:
    """model id -> cascade, for every policy at ``path`` (two policies with one name: an error)."""
    return load_versions(path)[0]


def load_versions(path: str | os.PathLike[str]) -> tuple[dict[str, Cascade], dict[str, str]]:
    """:func:`load`, and each model's policy version: the first 12 hex digits of its file's SHA-256."""
    served: dict[str, Cascade] = {}
    versions: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for f in policy_files(path):
        version = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        cascade = Cascade.from_policy(f)
        model = PREFIX + cascade.name
        if model in served:
            raise ConfigurationError(f"{f}: policy name {cascade.name!r} is also the name in {origin[model]}")
        served[model], versions[model], origin[model] = cascade, version, f
    return served, versions


__all__ = ["DEMO", "PREFIX", "load", "load_versions", "policy_files"]
