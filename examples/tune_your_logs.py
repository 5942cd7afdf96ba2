"""Choose a policy from your own labelled logs: ``cascade eval`` and ``cascade tune``, offline.

Your logs go in the recorded-outcomes format (``cascade-outcomes/1``: per query, what each model
answered, whether it was right, and what it cost). Here a small synthetic log stands in for them:
three made-up models answer 600 arithmetic questions, the cheap ones with 5 samples each, and
their samples agree more often when they are right, as real models' do.

    python examples/tune_your_logs.py
"""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from pathlib import Path

from cascade.cli import main as cascade_cli

MODELS = {  # name: (share of questions it knows, samples, USD per answer)
    "small": (0.60, 5, 0.00002),
    "medium": (0.80, 5, 0.0002),
    "large": (0.95, 1, 0.004),
}


def write_logs(path: Path, n: int = 600, seed: int = 0) -> None:
    """A question a model knows gets mostly right samples; one it does not know gets a wrong answer
    it tends to repeat, or noise: its samples agree less, which is what self-consistency reads."""
    rng = random.Random(seed)
    with gzip.open(path, "wt") as out:
        for i in range(n):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            truth = a * b
            hard = rng.random()  # some questions are harder for every model
            responses = {}
            for model, (knows_share, samples, cost) in MODELS.items():
                knows = rng.random() < knows_share * (1.3 - 0.6 * hard)
                wrong = truth + rng.choice([-10, -1, 1, 10, 100])  # the mistake it makes on this one
                answers = []
                for _ in range(samples):
                    r = rng.random()
                    if knows:
                        value = truth if r < 0.9 else wrong
                    else:
                        value = wrong if r < 0.6 else truth if r < 0.75 else rng.randint(100, 9999)
                    answers.append(
                        {
                            "text": f"{a} times {b} is {value}.",
                            "answer": str(value),
                            "quality": 1.0 if value == truth else 0.0,
                            "input_tokens": 20,
                            "output_tokens": 12,
                            "cost_usd": cost,
                        }
                    )
                responses[model] = answers
            record = {
                "id": f"q{i}",
                "prompt": f"What is {a} * {b}?",
                "reference": str(truth),
                "responses": responses,
            }
            out.write(json.dumps(record) + "\n")


SKELETON = """\
name: arithmetic
tiers:
  - name: small
    provider: replay
    model: small
    options: {path: logs.jsonl.gz}
    scorer: {kind: self_consistency, k: 5, answer: number}
    threshold: 0.6
  - name: medium
    provider: replay
    model: medium
    options: {path: logs.jsonl.gz}
    scorer: {kind: self_consistency, k: 5, answer: number}
    threshold: 0.6
  - name: large
    provider: replay
    model: large
    options: {path: logs.jsonl.gz}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_logs(folder / "logs.jsonl.gz")
        (folder / "skeleton.yaml").write_text(SKELETON)
        print("== cascade eval skeleton.yaml (thresholds as guessed)\n")
        cascade_cli(["eval", str(folder / "skeleton.yaml"), "--bootstrap", "200"])
        print("\n== cascade tune skeleton.yaml --target-quality best\n")
        tuned = folder / "tuned.yaml"
        code = cascade_cli(
            [
                "tune",
                str(folder / "skeleton.yaml"),
                "--target-quality",
                "best",
                "--out",
                str(tuned),
                "--bootstrap",
                "200",
            ]
        )
        if code != 0:
            raise SystemExit(code)
        print("\n== the tuned policy, ready to use\n")
        print(tuned.read_text())


if __name__ == "__main__":
    main()
