"""Load a policy from YAML: duplicate keys rejected, ``${VAR}`` interpolated, every error located.

Errors read ``support.yaml:12:15: tiers[1].provider: unknown provider 'antropic' (did you mean
'anthropic'?)``. Validation has two steps: the :class:`~cascade.policy.schema.Policy` model, then
each tier's provider options and scorer options against the registered implementation's
``Options`` model.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from cascade.errors import PolicyError
from cascade.policy.schema import Policy, ScorerSpec
from cascade.registry import PROVIDERS, SCORERS, suggest

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _unique_mapping(self: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """``construct_mapping`` that rejects duplicate keys."""
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=deep)
        if key in seen:
            first = seen[key].start_mark
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {first.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (pure Python: the error messages)."""

    construct_mapping = _unique_mapping  # type: ignore[assignment]


_FastUniqueKeyLoader: type[Any] = _UniqueKeyLoader
if getattr(yaml, "__with_libyaml__", False):  # libyaml: a policy parses about 10x faster

    class _CUniqueKeyLoader(yaml.CSafeLoader):
        construct_mapping = _unique_mapping  # type: ignore[assignment]

    _FastUniqueKeyLoader = _CUniqueKeyLoader


def _parse(text: str) -> Any:
    """The YAML data of ``text``: libyaml when it is installed; the pure-Python parser for a text
    libyaml refuses, so that errors keep its wording and positions (or it accepts the text)."""
    if _FastUniqueKeyLoader is not _UniqueKeyLoader:
        try:
            return yaml.load(text, Loader=_FastUniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
        except (yaml.YAMLError, ValueError):  # ValueError: UnicodeError, lone surrogates
            pass
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(policy)"


class _Locator:
    """Maps a field path to the line:column of its YAML node."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.text = text

    @functools.cached_property
    def root(self) -> yaml.Node | None:
        """The text's nodes, composed when a problem is to be placed (a valid policy never is)."""
        try:
            return yaml.compose(self.text, Loader=_UniqueKeyLoader) if self.text is not None else None
        except yaml.YAMLError:  # libyaml read what the pure-Python parser does not: no positions
            return None

    def where(self, loc: Loc, *, key: bool = False) -> str:
        """Where ``loc`` is; with ``key``, the mapping key's position rather than its value's."""
        node = self.root
        best = node
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == part:
                        nxt = k if key and i == len(loc) - 1 else v
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
            if node is None:
                break
            best = node
        if best is None:
            return self.source
        mark = best.start_mark
        return f"{self.source}:{mark.line + 1}:{mark.column + 1}"

    def problem(self, loc: Loc, message: str) -> str:
        at_key = message.startswith("unknown field")
        return f"{self.where(loc, key=at_key)}: {format_loc(loc)}: {message}"


def _interpolate(value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(
                (loc, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
            )
            return m.group(0)

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), problems) for i, v in enumerate(value)]
    return value


def _fields_of(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names of the (nested) model found at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _pydantic_problems(
    err: ValidationError, prefix: Loc, model: type[BaseModel] | None = None
) -> list[tuple[Loc, str]]:
    out = []
    for e in err.errors(include_url=False):
        # a model-level check can name the exact field in its context
        loc = (*prefix, *(e.get("ctx") or {}).get("loc", e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
            fields = _fields_of(model, e["loc"][:-1]) if model is not None else []
            if fields:
                msg += suggest(str(e["loc"][-1]), fields)
        elif (
            e["type"] != "missing"
            and "input" in e
            and not isinstance(e["input"], (dict, list))
            and repr(e["input"]) not in msg
        ):
            msg += f" (got {e['input']!r})"
        out.append((loc, msg))
    return out


def _validate_options(
    model: type[BaseModel], data: Mapping[str, Any], loc: Loc
) -> tuple[BaseModel | None, list[tuple[Loc, str]]]:
    try:
        return model.model_validate(dict(data)), []
    except ValidationError as err:
        return None, _pydantic_problems(err, loc, model)


def check_scorer(spec: ScorerSpec, loc: Loc) -> list[tuple[Loc, str]]:
    """Validate a scorer's options (recursively for combinators)."""
    cls = SCORERS.get(spec.kind)
    options, problems = _validate_options(cls.Options, spec.options, loc)
    if options is not None:
        for name in type(options).model_fields:
            value = getattr(options, name)
            items = value if isinstance(value, list) else [value]
            for i, child in enumerate(items):
                if isinstance(child, ScorerSpec):
                    child_loc = (*loc, name, i) if isinstance(value, list) else (*loc, name)
                    problems += check_scorer(child, child_loc)
    return problems


def validate(data: Any, *, source: str = "<policy>", text: str | None = None) -> Policy:
    """Validate parsed policy data; raise :class:`PolicyError` listing every problem."""
    locator = _Locator(source, text)
    env_problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        raise PolicyError([f"{source}: a policy must be a mapping (name:, tiers:, ...)"])
    data = _interpolate(data, (), env_problems)
    if env_problems:
        raise PolicyError([locator.problem(loc, msg) for loc, msg in env_problems])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        found = _pydantic_problems(err, (), Policy)
        raise PolicyError([locator.problem(loc, msg) for loc, msg in found]) from None
    problems: list[tuple[Loc, str]] = []
    for i, tier in enumerate(policy.tiers):
        cls = PROVIDERS.get(tier.provider)
        _, p = _validate_options(cls.Options, tier.options, ("tiers", i, "options"))
        problems += p
        if tier.scorer is not None:
            problems += check_scorer(tier.scorer, ("tiers", i, "scorer"))
    if problems:
        raise PolicyError([locator.problem(loc, msg) for loc, msg in problems])
    return policy


def loads(text: str, *, source: str = "<string>") -> Policy:
    """Parse and validate policy YAML text."""
    try:
        data = _parse(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PolicyError([f"{where}: {err.problem or err}"]) from None
    return validate(data, source=source, text=text)


def load(path: str | os.PathLike[str]) -> Policy:
    """Load a policy file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([f"{p}: no such policy file"]) from None
    except OSError as err:
        raise PolicyError([f"{p}: cannot read policy file: {err.strerror}"]) from None
    except UnicodeDecodeError as err:
        raise PolicyError([f"{p}: not a UTF-8 text file ({err.reason} at byte {err.start})"]) from None
    return loads(text, source=str(p))
