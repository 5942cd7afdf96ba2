"""A user's files: an output never overwrites an input, writes are atomic, reads fail in one line.

Every command that writes checks its outputs with :func:`check_outputs` before any work (or money)
is spent. An output is refused when it is, or lies inside, an input: the same file (also through
a link), a file inside an input folder (a labelled file inside the log folder it was read from
would be read again as log rows), or a file of a rotated outcome log (``logs/outcomes.jsonl``
stands for ``logs/outcomes-DATE.jsonl``). Outputs the user did not name (members of a family
written next to ``--out``) are not replaced without ``force``.

Writers go through :func:`replacing` (a temporary file in the same folder, renamed over the
target when complete), so a crash leaves the old file whole. Readers of text and gzip files go
through :func:`read_lines`, which turns a truncated or corrupt gzip stream into one
:class:`~cascade.errors.ConfigurationError` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import secrets
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from cascade.errors import ConfigurationError


class OutputPathError(ValueError):
    """An output path that would overwrite an input, or another output (a usage error)."""


@dataclass(frozen=True)
class Input:
    """Something a command reads: a ``file``, a ``folder`` (everything inside it) or a rotated
    ``log`` base (``logs/o.jsonl``: itself and ``logs/o-YYYY-MM-DD.jsonl`` with their cards)."""

    what: str
    path: Path
    kind: Literal["file", "folder", "log"] = "file"


@dataclass(frozen=True)
class Output:
    """Something a command writes; ``named``: the user gave this exact path (else it is derived
    from one, like ``x-1.yaml`` from ``--out x.yaml``, and an existing file needs ``force``);
    ``folder``: a folder whose files the command (re)writes, so no input may be inside it."""

    what: str
    path: Path
    named: bool = True
    folder: bool = False


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they would be
        return a.resolve() == b.resolve()


def _inside(p: Path, folder: Path) -> bool:
    return p.resolve().is_relative_to(folder.resolve())


def _rotated(p: Path, base: Path) -> bool:
    """``p`` is ``base`` or one of its dated files (or their cards)."""
    if p.resolve().parent != base.resolve().parent:
        return False
    stem = base.name.removesuffix(".jsonl")
    return p.name == base.name or bool(
        re.fullmatch(re.escape(stem) + r"-\d{4}-\d{2}-\d{2}\.(jsonl|jsonl\.gz|card\.json)", p.name)
    )


def conflict(out: Path, inp: Input) -> str | None:
    """How writing ``out`` would change (or be read back as part of) ``inp``: ``is``, ``is
    inside`` or ``is a file of``; None when it would not."""
    if inp.kind == "folder":
        return "is inside" if _inside(out, inp.path) else None
    if inp.kind == "log" and _rotated(out, inp.path):
        return "is a file of"
    return "is" if _same(out, inp.path) else None


def check_outputs(outputs: Iterable[Output], inputs: Iterable[Input], *, force: bool = False) -> None:
    """Refuse (:class:`OutputPathError`, one line naming the file and the fix) an output that is an
    input, is inside one, is another output, or (not named by the user) exists without ``force``."""
    outs = list(outputs)
    ins = list(inputs)
    for i, out in enumerate(outs):
        for inp in ins:
            relation = conflict(out.path, inp)
            if relation is None and out.folder and _inside(inp.path, out.path):
                relation = "holds"
            if relation is not None:
                raise OutputPathError(
                    f"{out.what} {out.path} {relation} {inp.what} {inp.path}:"
                    " an output never overwrites an input; write it elsewhere"
                )
        for other in outs[:i]:
            if _same(out.path, other.path):
                raise OutputPathError(
                    f"{out.what} {out.path} and {other.what} {other.path} are the same file;"
                    " give each output its own path"
                )
        if not out.named and not force and out.path.exists():
            raise OutputPathError(
                f"{out.path} exists ({out.what}); give --force to replace it, or choose another --out"
            )


def policy_inputs(policy_path: str | Path, what: str = "the policy") -> list[Input]:
    """The policy file and every file it names (replay data, artifacts, rubric files, the
    ledger, the outcome log, the data it was tuned on), each resolved as the engine resolves it.
    A policy that does not load names only itself (loading reports its problems later)."""
    from cascade.errors import CascadeError
    from cascade.policy import loader

    p = Path(policy_path)
    out = [Input(what, p)]
    try:
        policy = loader.load(p)
    except (CascadeError, OSError):
        return out
    base = p.resolve().parent

    def at(value: str) -> Path:
        q = Path(os.path.expanduser(value))
        return q if q.is_absolute() else base / q

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("path", "artifact", "rubric_file") and node:
            out.append(Input(f"a file {what} names ({key}:)", at(node)))

    raw = policy.model_dump(exclude={"logging", "tuned"})
    walk(raw)
    if policy.logging.outcomes is not None:
        out.append(Input(f"the outcome log of {what}", at(policy.logging.outcomes.path), "log"))
    if policy.tuned is not None:
        out.append(Input(f"the data {what} was tuned on", at(policy.tuned.data)))
    return out


def card_path(path: Path) -> Path:
    """The ``.card.json`` beside a recorded-outcomes or log file (``x.jsonl.gz`` -> ``x.card.json``)."""
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".card.json")
    return path.with_suffix(".card.json")


def data_inputs(path: str | Path, what: str = "the data file") -> list[Input]:
    """A recorded-outcomes file and its card."""
    p = Path(path)
    return [Input(what, p), Input(f"the card of {what}", card_path(p))]


def log_inputs(paths: Sequence[str]) -> list[Input]:
    """What ``cascade report``/``label`` read from ``paths`` (see
    :func:`~cascade.observe.outcome_log.log_files`): folders, files with their cards, and rotated
    bases (``logs/o.jsonl`` for ``logs/o-DATE.jsonl``)."""
    out: list[Input] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.append(Input("the log folder", p, "folder"))
        elif p.exists():
            out += [Input("the log file", p), Input("the card of the log file", card_path(p))]
        else:
            out.append(Input("the log", p, "log"))
    return out


@contextlib.contextmanager
def replacing(path: str | Path, *, keep_partial: bool = False) -> Iterator[Path]:
    """A temporary path in ``path``'s folder (same extension) to write to; renamed over ``path``
    when the block ends without an error, removed when it fails (kept with ``keep_partial``, for
    rows already paid for). A missing or unwritable folder is an ``OSError`` naming ``path``."""
    target = Path(path)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".gz") else target.suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    while True:
        tmp = target.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
            break
        except FileExistsError:  # pragma: no cover - a 32-bit name collision
            continue
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(target)) from None
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        if not keep_partial:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def writing(path: str | Path, *, keep_partial: bool = False) -> Iterator[IO[str]]:
    """A text stream (gzip for ``.gz``) that replaces ``path`` atomically when the block ends."""
    with replacing(path, keep_partial=keep_partial) as tmp:
        opener: Any = gzip.open if Path(path).name.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            yield fh


def read_lines(path: str | Path, *, errors: str = "strict") -> Iterator[str]:
    """The lines of a text file, gzip-compressed when its name ends in ``.gz``. A truncated or
    corrupt gzip stream is a :class:`ConfigurationError` naming the file and the line reached."""
    p = Path(path)
    opener: Any = gzip.open if p.name.endswith(".gz") else open
    n = 0
    try:
        with opener(p, "rt", encoding="utf-8", errors=errors) as fh:
            for line in fh:
                n += 1
                yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        why = "truncated" if isinstance(err, EOFError) else f"not gzip: {err}"
        raise ConfigurationError(
            f"{p}: cannot read it as gzip after {n} lines ({why}); recompress it or give the"
            " uncompressed file"
        ) from None


def check_plot(path: str | Path) -> None:
    """Refuse, before any work, a missing matplotlib (the ``plot`` extra) and a ``--plot`` path
    whose extension is not a format matplotlib writes (``.png``, ``.svg``, ``.pdf``, ``.jpg``...)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise OutputPathError(
            "--plot needs matplotlib: pip install 'cascade-llm[plot]'"
            " (pip install -e '.[plot]' in a checkout)"
        ) from None
    p = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if p.suffix.lower().lstrip(".") not in formats:
        raise OutputPathError(f"--plot {p}: not an image file name; end it in .png, .svg, .pdf or .jpg")


__all__ = [
    "Input",
    "Output",
    "OutputPathError",
    "card_path",
    "check_outputs",
    "check_plot",
    "conflict",
    "data_inputs",
    "log_inputs",
    "policy_inputs",
    "read_lines",
    "replacing",
    "write_text",
    "writing",
]
