"""The combined verifier (kind: verifier) and the prompt-only estimator behind a tier's skip."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from cascade import outcomes
from cascade.cli import main
from cascade.engine.build import build
from cascade.errors import ConfigurationError, ProviderError
from cascade.learn.classifier import Example, train
from cascade.learn.estimator import (
    LangChainEmbedder,
    OpenAIEmbedder,
    SkipEstimator,
    load_prompt_estimator,
    prompt_examples,
    train_prompt_estimator,
)
from cascade.learn.features import FeatureConfig
from cascade.learn.verifier import train_verifier, verifier_examples
from cascade.request import Request
from cascade.scorers import metrics
from cascade.scorers.verifier import VerifierOptions
from cascade.types import Sample
from tests.evaluate.synth import write_outcomes

SMALL = FeatureConfig(bits=12, groups=("prompt",))


def prompts(n: int, seed: int = 0) -> list[Example]:
    """Easy topics are answered right 90% of the time, hard ones 20%: the prompt alone tells."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = rng.random() < 0.5
        topic = rng.choice(["topology", "measure theory"] if hard else ["arithmetic", "spelling"])
        right = rng.random() < (0.2 if hard else 0.9)
        out.append(Example(f"A question about {topic}, number {i}?", (Sample(""),), float(right), f"q{i}"))
    return out


def test_prompt_estimator_learns_from_the_prompt_and_round_trips(tmp_path: Path) -> None:
    est = train_prompt_estimator(prompts(400), bits=12)
    test = prompts(300, seed=1)
    p = est.predict_many([e.prompt for e in test])
    y = np.array([e.label for e in test])
    assert metrics.auroc(p, y) > 0.8
    assert metrics.ece(p, y) < 0.1
    path = tmp_path / "skip.json"
    est.save(path)
    again = load_prompt_estimator(path)
    assert isinstance(again, SkipEstimator)
    r = Request.of("A question about topology, number 9999?")
    assert again.predict(r) == pytest.approx(float(est.predict_many([r.prompt])[0]), abs=1e-6)
    assert again.predict(r) < again.predict(Request.of("A question about arithmetic, number 9999?"))


def test_prompt_estimator_load_errors_are_one_line(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="a JSON list"):
        load_prompt_estimator(p)
    clf = train(prompts(100), config=SMALL)  # a classifier artifact, not a prompt-only one
    clf.save(p)
    with pytest.raises(ConfigurationError, match="a classifier artifact, not a prompt one"):
        load_prompt_estimator(p)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_prompt_estimator(tmp_path / "missing.json")


class FixedEmbeddings(Embeddings):
    """A fixed fake: two dimensions that say whether the topic is hard (no weights, no network)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0 if ("topology" in t or "measure" in t) else 0.0, len(t) / 100] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_prompt_estimator_with_langchain_embeddings(tmp_path: Path) -> None:
    emb = FixedEmbeddings()
    est = train_prompt_estimator(
        prompts(300), embedder=LangChainEmbedder(emb), embedding={"source": "object"}, bits=10
    )
    path = tmp_path / "emb.json"
    est.save(path)
    doc = json.loads(path.read_text())
    assert doc["meta"]["embedding"] == {"source": "object", "dims": 2}
    with pytest.raises(ConfigurationError, match="embeddings"):
        load_prompt_estimator(path)  # the artifact needs an embeddings source
    again = load_prompt_estimator(path, embeddings=emb)
    hard = again.predict(Request.of("Something on measure theory"))
    easy = again.predict(Request.of("Something on spelling"))
    assert hard < 0.4 < 0.7 < easy

    class Broken(FixedEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] for _ in texts]  # the wrong dimension

    with pytest.raises(ProviderError, match="1 dimensions"):
        load_prompt_estimator(path, embeddings=Broken()).predict(Request.of("x"))


class _Embeddings(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.seen.append(body)  # type: ignore[attr-defined]
        if body["model"] == "broken":
            data: Any = {"object": "list", "data": "nope"}
        else:
            data = {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": FixedEmbeddings().embed_query(t)}
                    for i, t in enumerate(body["input"])
                ],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def embeddings_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_openai_embeddings_endpoint(tmp_path: Path, embeddings_server: str) -> None:
    spec = {"source": "openai", "model": "fake-embed", "base_url": embeddings_server}
    emb = OpenAIEmbedder("fake-embed", base_url=embeddings_server)
    est = train_prompt_estimator(prompts(200), embedder=emb, embedding=spec, bits=10)
    path = tmp_path / "openai.json"
    est.save(path)
    again = load_prompt_estimator(path)  # rebuilt from the artifact: same endpoint, no key needed locally
    assert again.predict(Request.of("Something on topology")) < again.predict(Request.of("On spelling"))
    with pytest.raises(ProviderError, match="malformed response"):
        OpenAIEmbedder("broken", base_url=embeddings_server).embed(["x"])


def test_prompt_examples_from_outcomes(tmp_path: Path) -> None:
    data = outcomes.load(write_outcomes(tmp_path, 50))
    ex = prompt_examples(data, "tiny")
    assert len(ex) == 50 and {e.samples for e in ex} == {(Sample(""),)}
    with pytest.raises(ConfigurationError, match="not in the file"):
        prompt_examples(data, "nope")


# -- the verifier ---------------------------------------------------------------------------------


def _verifier(tmp_path: Path, n: int = 300) -> tuple[Path, Path, VerifierOptions]:
    data_path = write_outcomes(tmp_path, n, seed=5)
    art = tmp_path / "tiny.verifier.json"
    options = VerifierOptions(
        path=str(art), k=3, answer="number", partners=[{"samples": 1, "model": "small"}]
    )
    data = outcomes.load(data_path)
    examples, names = verifier_examples(options, data, "tiny")
    assert names == ("agree:mixture0:small", "answered:mixture0:small", "partners_agree_share")
    assert len(examples) == n and all(len(e.samples) == 3 for e in examples)
    train_verifier(examples, names, bits=12).save(art)
    return data_path, art, options


def _policy(tmp_path: Path, data_path: Path, art: Path, partners: str) -> Path:
    p = tmp_path / "verifier.yaml"
    p.write_text(
        f"""name: verified
tiers:
  - name: cheap
    provider: replay
    model: tiny
    options: {{path: "{data_path}"}}
    scorer:
      kind: verifier
      path: {art.name}
      k: 3
      answer: number
      partners: {partners}
    threshold: 0.7
  - name: strong
    provider: replay
    model: big
    options: {{path: "{data_path}"}}
"""
    )
    return p


def test_verifier_combines_partner_agreement_and_runs_in_a_policy(tmp_path: Path) -> None:
    data_path, art, _ = _verifier(tmp_path)
    doc = json.loads(art.read_text())
    assert doc["kind"] == "verifier" and doc["extra"][0] == "agree:mixture0:small"
    policy = _policy(tmp_path, data_path, art, "[{samples: 1, model: small}]")
    cascade = build(policy)
    data = outcomes.load(data_path)
    record = data.records[0]
    result = cascade.run(record.prompt, metadata={"id": record.id})
    first = result.attempts[0]
    assert first.score is not None and 0 <= first.score <= 1
    assert set(first.score_detail["inputs"]) == {"mixture0:small"}
    assert first.scorer_cost > 0  # the partner's call is the scorer's cost
    again = asyncio.run(cascade.arun(record.prompt, metadata={"id": record.id}))
    assert again.attempts[0].score == pytest.approx(first.score)


@pytest.mark.slow
def test_verifier_beats_agreement_alone_on_held_out_answers(tmp_path: Path) -> None:
    data_path, art, options = _verifier(tmp_path, 600)
    data = outcomes.load(data_path)
    examples, names = verifier_examples(options, data, "tiny")
    train_set, test_set = examples[:400], examples[400:]
    clf = train_verifier(train_set, names, bits=12)
    p = np.array([clf.predict(e.prompt, e.samples, e.extra)[0] for e in test_set])
    y = np.array([e.label for e in test_set])
    partner = np.array([e.extra[0] for e in test_set])
    own = np.array([sum(s.answer == e.samples[0].answer for s in e.samples) for e in test_set])
    assert metrics.auroc(p, y) >= max(metrics.auroc(partner, y), metrics.auroc(own, y)) - 0.01


def test_verifier_policy_must_name_the_inputs_it_was_trained_on(tmp_path: Path) -> None:
    data_path, art, _ = _verifier(tmp_path, 120)
    policy = _policy(tmp_path, data_path, art, "[]")
    with pytest.raises(ConfigurationError, match="trained with inputs"):
        build(policy)
    policy = _policy(tmp_path, data_path, art, "[{samples: 1, model: small}]")
    policy.write_text(
        policy.read_text().replace("answer: number", "answer: number\n      features: [prompt]")
    )
    with pytest.raises(ConfigurationError, match="feature groups"):
        build(policy)


@pytest.mark.slow
def test_train_scorer_cli_verifier_and_prompt_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_path = write_outcomes(tmp_path, 200, seed=2)
    art = tmp_path / "v.json"
    code = main(
        [
            "train-scorer", str(data_path), "--model", "tiny", "-o", str(art), "--verifier",
            "--partner", "small", "--samples", "3", "--answer", "number", "--bits", "12", "--json", "--check", "arithmetic",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "verifier" and report["n_test"] > 0
    doc = json.loads(art.read_text())
    assert doc["extra"][0] == "agree:mixture0:small"
    assert doc["meta"]["model"] == "tiny" and doc["meta"]["answer"] == "number" and doc["meta"]["data_sha256"]
    est = tmp_path / "p.json"
    assert main(["train-scorer", str(data_path), "--model", "tiny", "-o", str(est), "--prompt-only"]) == 0
    assert "held-out AUROC" in capsys.readouterr().out
    assert load_prompt_estimator(est).predict(Request.of("Question 3: what is it?")) > 0
    assert (
        main(["train-scorer", str(data_path), "--model", "tiny", "-o", str(est), "--partner", "small"]) == 2
    )
    assert "need --verifier" in capsys.readouterr().err
    code = main(
        [
            "train-scorer",
            str(data_path),
            "--model",
            "tiny",
            "-o",
            str(est),
            "--prompt-only",
            "--versus",
            "big",
        ]
    )
    assert code == 0 and json.loads(est.read_text())["meta"]["versus"] == "big"


def test_arithmetic_check_recomputes_worked_steps() -> None:
    from cascade.scorers.verifier import arithmetic_check

    text = "8 x $5 = $40. Then 40 + 24 = 65, and <<8*5*60/100=24>>24; 2/2 * 1/2 = 1/2; 10% of 50 = 5."
    assert arithmetic_check(text) == (3, 1)  # the fraction on the right and "of" are not checked
    assert arithmetic_check("1,000 + 2,500 = 3,500. 3.5 * 2 = 7.00") == (2, 0)
    assert arithmetic_check("20% * 50 = 10") == (1, 0)
    # nothing but arithmetic is evaluated, and nothing huge or deep
    assert arithmetic_check("__import__('os') = 1, 9**9**9 = 1, 1/0 = 3") == (0, 0)
    assert arithmetic_check("(" * 400 + "1" + ")" * 400 + " + 1 = 2") == (0, 0)


def test_verifier_with_a_bad_nested_scorer_is_a_one_line_error(tmp_path: Path) -> None:
    data_path, art, _ = _verifier(tmp_path, 60)
    policy = _policy(tmp_path, data_path, art, "[{samples: 1, model: small}]")
    text = policy.read_text().replace(
        "answer: number\n", "answer: number\n      scorers: {guard: {kind: regexx}}\n", 1
    )
    policy.write_text(text)
    with pytest.raises(ConfigurationError, match=r"scorers\.guard.*unknown scorer 'regexx'") as info:
        build(policy)
    assert "\n" not in str(info.value)
    policy.write_text(text.replace("kind: regexx", "kind: regex, patern: x"))
    with pytest.raises(ConfigurationError, match=r"scorers\.guard\.pattern: Field required"):
        build(policy)


def test_a_failing_extractor_is_no_answer_in_the_verifier_features() -> None:
    from decimal import Decimal

    from cascade.money import Price
    from cascade.scorers.self_consistency import SelfConsistencyScorer, Source
    from cascade.scorers.verifier import VerifierInputs
    from cascade.testing import ScriptedProvider
    from cascade.types import Completion, Usage

    def boom(text: str) -> str:
        raise RuntimeError("nope")

    src = Source(ScriptedProvider(["7"]), 1, Price(Decimal(0), Decimal(0)), name="p")
    inputs = VerifierInputs(SelfConsistencyScorer(boom, k=1), [src])
    got = inputs.gather(Request.of("q"), Completion((Sample("7"),), Usage(), "m"))
    assert got.values[:2] == (0.0, 0.0)  # neither answer could be read: no agreement, no answer


def test_an_artifact_trained_for_another_model_or_answer_kind_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.learn.classifier import FEATURE_VERSION, trained_for

    data_path = write_outcomes(tmp_path, 120, seed=5)
    art = tmp_path / "tiny.verifier.json"
    options = VerifierOptions(
        path=str(art), k=3, answer="number", partners=[{"samples": 1, "model": "small"}]
    )
    data = outcomes.load(data_path)
    examples, names = verifier_examples(options, data, "tiny")
    train_verifier(examples, names, bits=12, meta=trained_for("tiny", data, "number")).save(art)
    doc = json.loads(art.read_text())
    assert doc["feature_version"] == FEATURE_VERSION
    assert doc["meta"]["model"] == "tiny" and doc["meta"]["answer"] == "number"
    assert len(doc["meta"]["data_sha256"]) == 16 and doc["meta"]["data"] == data_path.name
    policy = _policy(tmp_path, data_path, art, "[{samples: 1, model: small}]")
    build(policy)  # the model and answer kind it was trained for
    policy.write_text(policy.read_text().replace("model: tiny", "model: small", 1))
    with pytest.raises(ConfigurationError, match="trained for model 'tiny', used on a tier of model 'small'"):
        build(policy)
    capsys.readouterr()
    assert main(["validate", "--build", str(policy)]) != 0
    assert "trained for model 'tiny'" in capsys.readouterr().err
    policy.write_text(
        policy.read_text().replace("model: small", "model: tiny", 1).replace("answer: number", "answer: text")
    )
    with pytest.raises(ConfigurationError, match="answers extracted as 'number', the policy asks for 'text'"):
        build(policy)
    doc["feature_version"] = FEATURE_VERSION + 1
    art.write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError, match="feature version"):
        build(policy)


def test_a_skip_estimator_for_another_model_is_refused(tmp_path: Path) -> None:
    from cascade.learn.classifier import trained_for

    data_path = write_outcomes(tmp_path, 120, seed=5)
    data = outcomes.load(data_path)
    est = tmp_path / "tiny.prompt.json"
    train_prompt_estimator(prompt_examples(data, "tiny"), meta=trained_for("tiny", data)).save(est)
    policy = tmp_path / "skip.yaml"
    text = f"""name: skipping
tiers:
  - name: cheap
    provider: replay
    model: MODEL
    options: {{path: "{data_path}"}}
    skip: {{artifact: {est.name}, threshold: 0.3}}
    scorer: {{kind: self_consistency, k: 3, answer: number}}
    threshold: 0.6
  - name: strong
    provider: replay
    model: big
    options: {{path: "{data_path}"}}
"""
    policy.write_text(text.replace("MODEL", "tiny"))
    build(policy)
    policy.write_text(text.replace("MODEL", "small"))
    with pytest.raises(ConfigurationError, match="trained for model 'tiny', used on a tier of model 'small'"):
        build(policy)


def test_tune_artifacts_say_what_they_were_trained_for(tmp_path: Path) -> None:
    from cascade.evaluate.tune import Objective, tune
    from tests.evaluate.synth import write_policy

    data_path = write_outcomes(tmp_path, 200, seed=5)
    data = outcomes.load(data_path)
    tune(
        write_policy(tmp_path, data_path),
        data,
        Objective(None, "best", 0.0),
        classifiers=1,
        artifacts=tmp_path / "a",
    )
    metas = [json.loads(f.read_text())["meta"] for f in sorted((tmp_path / "a").glob("*.json"))]
    assert metas and all(m["model"] in {"tiny", "small"} and m["data"] == data_path.name for m in metas)
