"""The policy JSON Schema, with each built-in scorer's and provider's options spelled out."""

from __future__ import annotations

from typing import Any

from cascade.policy.schema import Policy
from cascade.registry import PROVIDERS, SCORERS


def _merge_defs(target: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    for name, d in schema.pop("$defs", {}).items():
        if name != "ScorerSpec":
            target.setdefault(name, d)
    return schema


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for policy files."""
    schema = Policy.model_json_schema()
    defs = schema.setdefault("$defs", {})
    kinds = []
    for kind in sorted(SCORERS.names()):
        opts = _merge_defs(defs, SCORERS.get(kind).Options.model_json_schema())
        opts["properties"] = {"kind": {"const": kind}, **opts.get("properties", {})}
        opts["required"] = ["kind", *opts.get("required", [])]
        opts["additionalProperties"] = False
        opts["title"] = f"scorer {kind}"
        kinds.append(opts)
    defs["ScorerSpec"] = {"oneOf": kinds, "title": "ScorerSpec"}
    tier = defs["TierSpec"]
    tier["properties"]["provider"] = {"enum": sorted(PROVIDERS.names()), "title": "Provider"}
    rules = []
    for name in sorted(PROVIDERS.names()):
        opts = _merge_defs(defs, PROVIDERS.get(name).Options.model_json_schema())
        opts["additionalProperties"] = False
        rules.append(
            {
                "if": {"properties": {"provider": {"const": name}}, "required": ["provider"]},
                "then": {"properties": {"options": opts}},
            }
        )
    tier["allOf"] = rules
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
