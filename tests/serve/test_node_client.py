"""The official ``openai`` JS library, under Node, against a real gateway.

``.ci/run`` installs it into a scratch folder and exports ``CASCADE_NODE_MODULES``; without that, the
test reuses that same folder (``~/.cache/cascade-ci/node-openai-7``) or installs it there once with npm,
so a fast run does not spend seconds in npm. It skips where node or npm are absent (or npm cannot
install the package: no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.serve.support import KEY, serve, two_tiers

SCRIPT = Path(__file__).with_name("openai_client.cjs")
# the folder .ci/run installs into: shared, so the package is installed once per machine, not per run
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cascade-ci" / "node-openai-7"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    given = os.environ.get("CASCADE_NODE_MODULES")
    if given:
        return Path(given)
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (and CASCADE_NODE_MODULES is not set)")
    if (CACHE / "node_modules" / "openai" / "package.json").is_file():
        return CACHE / "node_modules"
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    folder = CACHE.parent / f".node-openai-7-{uuid.uuid4().hex[:8]}"  # installed aside, then renamed
    done = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder), "openai@7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"npm could not install openai: {done.stderr.strip()[:200]}")
    try:
        folder.rename(CACHE)  # atomic; fails when another run filled CACHE meanwhile
    except OSError:
        if not (CACHE / "node_modules" / "openai" / "package.json").is_file():
            return folder / "node_modules"  # CACHE is unusable: keep this install
        shutil.rmtree(folder, ignore_errors=True)
    return CACHE / "node_modules"


def test_the_openai_js_library_gets_openai_shaped_answers(node_modules: Path) -> None:
    with serve({"cascade/faq": two_tiers(score=0.1)}) as s:
        out = subprocess.run(
            ["node", str(SCRIPT), f"{s.url}/v1", KEY, "cascade/faq"],
            env={**os.environ, "NODE_PATH": str(node_modules)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["plain"]["choices"][0]["message"]["content"] == "strong answer" and got["tier"] == "strong"
    assert got["plain"]["usage"]["total_tokens"] == 40
    chunks = got["chunks"]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "strong answer"
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 40
    assert got["refused"] == {"status": 401, "code": "invalid_api_key", "name": "AuthenticationError"}
    assert got["models"] == ["cascade/faq"]
