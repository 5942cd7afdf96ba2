"""Policy loading: every error names file:line:col and the field; env vars; the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade import PolicyError
from cascade.policy import load, loads
from cascade.policy.jsonschema import policy_json_schema
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
name: support
tiers:
  - name: small
    provider: scripted
    model: tiny
    options: {answers: ["hi"]}
    scorer: {kind: non_empty}
    threshold: 0.5
  - name: big
    provider: scripted
    model: huge
    options: {answers: ["hello"]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        loads(text, source="support.yaml")
    return info.value.problems


def test_good_policy_loads_with_defaults() -> None:
    policy = loads(GOOD)
    assert [t.name for t in policy.tiers] == ["small", "big"]
    assert policy.on_exhausted == "return_best"
    assert policy.budget.on_exceeded == "stop"
    assert policy.tiers[0].params.max_tokens == 1024
    assert policy.tiers[0].retry.attempts == 3


def test_unknown_provider_suggests_the_close_name() -> None:
    text = GOOD.replace("    provider: scripted\n    model: huge", "    provider: scriptd\n    model: huge")
    assert problems(text) == [
        "support.yaml:10:15: tiers[1].provider: unknown provider 'scriptd' (did you mean 'scripted'?)"
    ]


def test_unknown_field_is_named_with_suggestion() -> None:
    text = GOOD.replace("    threshold: 0.5", "    treshold: 0.5")
    assert problems(text) == [
        "support.yaml:8:5: tiers[0].treshold: unknown field (did you mean 'threshold'?)"
    ]


def test_unknown_field_suggestion_in_options() -> None:
    text = GOOD.replace('options: {answers: ["hi"]}', 'options: {answer: ["hi"]}')
    got = problems(text)
    assert "support.yaml:6:15: tiers[0].options.answer: unknown field (did you mean 'answers'?)" in got
    assert "support.yaml:6:14: tiers[0].options.answers: Field required" in got


def test_duplicate_keys_are_rejected() -> None:
    text = GOOD.replace("    model: tiny\n", "    model: tiny\n    model: small\n")
    assert problems(text) == ["support.yaml:6:5: duplicate key 'model' (first defined on line 5)"]


def test_bad_value_reports_input() -> None:
    text = GOOD.replace("threshold: 0.5", "threshold: 1.5")
    assert problems(text) == [
        "support.yaml:8:16: tiers[0].threshold: Input should be less than or equal to 1 (got 1.5)"
    ]


def test_middle_tier_needs_a_scorer() -> None:
    text = GOOD.replace("    scorer: {kind: non_empty}\n    threshold: 0.5\n", "")
    assert problems(text) == [
        "support.yaml:1:1: (policy): tier 'small' is not the last tier, so it needs a scorer and a threshold"
    ]


def test_unknown_scorer_kind_and_bad_scorer_options() -> None:
    assert problems(GOOD.replace("kind: non_empty", "kind: non_empt")) == [
        "support.yaml:7:20: tiers[0].scorer.kind: unknown scorer 'non_empt' (did you mean 'non_empty'?)"
    ]
    got = problems(GOOD.replace("{kind: non_empty}", "{kind: regex, pattern: '('}"))
    assert got == [
        "support.yaml:7:36: tiers[0].scorer.pattern: invalid regular expression:"
        " missing ), unterminated subpattern at position 0 (got '(')"
    ]


def test_nested_scorer_errors_are_located() -> None:
    text = GOOD.replace("{kind: non_empty}", "{kind: min, scorers: [{kind: non_empty}, {kind: regex}]}")
    assert problems(text) == ["support.yaml:7:54: tiers[0].scorer.scorers[1].pattern: Field required"]


def test_duplicate_tier_names() -> None:
    text = GOOD.replace("name: big", "name: small")
    assert problems(text) == ["support.yaml:9:11: tiers[1].name: duplicate tier name 'small'"]


def test_yaml_syntax_error_has_location() -> None:
    got = problems("name: x\ntiers: [\n")
    assert len(got) == 1 and got[0].startswith("support.yaml:3:1: ")


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["support.yaml: a policy must be a mapping (name:, tiers:, ...)"]


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINY_MODEL", "tiny-2")
    policy = loads(
        GOOD.replace("model: tiny", "model: ${TINY_MODEL}").replace("model: huge", "model: ${BIG:-huge-1}")
    )
    assert [t.model for t in policy.tiers] == ["tiny-2", "huge-1"]


def test_missing_env_var_is_an_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    assert problems(GOOD.replace("model: tiny", "model: ${NOPE}")) == [
        "support.yaml:5:12: tiers[0].model: environment variable NOPE is not set (use ${NOPE:-default} for a default)"
    ]


def test_yaml_traps_do_not_silently_coerce() -> None:
    # `no` would be False and `1.10` the float 1.1 with plain YAML: the model name must be a string
    got = problems(GOOD.replace("model: tiny", "model: no"))
    assert got == ["support.yaml:5:12: tiers[0].model: Input should be a valid string (got False)"]


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: no such policy file"):
        load("nope.yaml")


def test_binary_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_bytes(b"\xff\xfe name: x\n")
    with pytest.raises(
        PolicyError, match=r"policy\.yaml: not a UTF-8 text file \(invalid start byte at byte 0\)"
    ):
        load(bad)


def test_every_example_policy_loads() -> None:
    files = sorted((ROOT / "policies").glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        load(f)


def test_committed_json_schema_is_fresh() -> None:
    committed = json.loads((ROOT / "policies" / "policy.schema.json").read_text())
    assert committed == policy_json_schema(), "run: cascade schema --out policies/policy.schema.json"


def test_json_schema_spells_out_scorer_kinds() -> None:
    schema = policy_json_schema()
    kinds = {k["properties"]["kind"]["const"] for k in schema["$defs"]["ScorerSpec"]["oneOf"]}
    assert {"non_empty", "regex", "json", "min", "all"} <= kinds


def test_every_example_policy_builds_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Building checks credentials, prices and ledgers, and must not touch the network."""
    from cascade.engine.build import build

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("CASCADE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    monkeypatch.setenv("CASCADE_DATA", str(DATA))  # the replay policies read ${CASCADE_DATA:-...}
    built = 0
    for f in sorted((ROOT / "policies").glob("*.yaml")):
        policy = load(f)
        if any(t.provider == "replay" for t in policy.tiers) and not (DATA / "README.md").exists():
            continue  # replay policies need the recorded outcomes
        cascade = build(f)
        assert [t.name for t in cascade.tiers] == [t.name for t in policy.tiers]
        built += 1
    assert built >= 4  # demo + support-bot + math-reasoning + agent-tools at least


def test_shadow_sampling_without_an_outcome_log_is_refused() -> None:
    [problem] = problems(GOOD + "shadow: {rate: 0.02}\n")
    assert problem.startswith("support.yaml:") and "shadow sampling needs logging.outcomes" in problem
    loads(GOOD + "shadow: {rate: 0.02}\nlogging: {outcomes: {path: out.jsonl}}\n")
    loads(GOOD + "shadow: {rate: 0}\n")  # off: nothing is paid for


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis://localhost:6379/abc", "must be a number"),
        ("redis://localhost:6379?db=x", "must be a number"),
        ("http://localhost:6379/0", "starts with redis://"),
    ],
)
def test_a_redis_url_whose_database_is_not_a_number_is_refused(url: str, error: str) -> None:
    [problem] = problems(GOOD + f"budget:\n  ledger: {{kind: redis, url: '{url}'}}\n")
    assert "budget.ledger.url" in problem and error in problem


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/3", "rediss://u:p@h:1/", "redis://h", "unix:///tmp/r.sock?db=2"]
)
def test_a_redis_url_with_a_number_or_no_database_loads(url: str) -> None:
    assert loads(GOOD + f"budget:\n  ledger: {{kind: redis, url: '{url}'}}\n").budget.ledger is not None


def test_libyaml_and_the_pure_python_parser_read_every_shipped_policy_alike() -> None:
    """Policies parse with libyaml when installed (10 ms -> 0.75 ms a load); its data must be the
    pure-Python parser's, and a refused text keeps the pure-Python wording."""
    import yaml

    from cascade.errors import PolicyError
    from cascade.policy import loader

    for path in sorted(Path("policies").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert loader._parse(text) == yaml.load(text, Loader=loader._UniqueKeyLoader), path
    with pytest.raises(PolicyError, match=r"<string>:2:1: duplicate key 'name' \(first defined on line 1\)"):
        loader.loads("name: a\nname: b\n")
