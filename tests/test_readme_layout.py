"""The README's layout map names every module of the package, and only modules that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cascade"


def layout_map() -> dict[str, str]:
    """The map's text per folder of ``cascade/`` ("" for the top level), from the README's Layout block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^## Layout\n\n```\n(.*?)^```", readme, re.S | re.M)
    assert block, "README.md has no '## Layout' code block"
    lines = block.group(1).splitlines()
    assert lines[0] == "cascade/"
    sections: dict[str, str] = {"": ""}
    current = ""
    for line in lines[1:]:
        if not line.startswith("  "):  # back at the repository's top level
            break
        entry = re.match(r"  (\w+)/ ", line)
        if entry:
            current = entry.group(1)
        elif not line.startswith("   "):  # a top-level file's line
            current = ""
        sections[current] = sections.get(current, "") + line + "\n"
    return sections


def named_modules(text: str) -> set[str]:
    return set(re.findall(r"\b(\w+\.py)\b", text))


def test_layout_map_names_every_module() -> None:
    sections = layout_map()
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(sections), f"packages missing from the map: {folders - set(sections)}"
    assert all((PACKAGE / folder).is_dir() for folder in sections), (
        "the map names a folder that does not exist"
    )
    for folder, text in sections.items():
        where = PACKAGE / folder
        present = {p.name for p in where.glob("*.py")} - {"__init__.py"}
        assert named_modules(text) == present, f"cascade/{folder}: map and tree differ"
