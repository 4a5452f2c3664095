"""README is the manual: short, every relative link in it and in docs/ resolves, and every results page says its
question and its conclusion."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "RESULTS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_a_manual_of_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert lines[0] == "# romer" and "romer demo" in "\n".join(lines[:15]) and "pytest" in "\n".join(lines[:15])


def test_every_relative_link_resolves():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert not broken, broken


def test_every_results_page_states_its_question_and_conclusion():
    for page in sorted((ROOT / "docs" / "results").glob("*.md")):
        text = page.read_text()
        assert "**Question.**" in text and "**Conclusion.**" in text, page.name
        assert page.name in (ROOT / "bench" / "RESULTS.md").read_text(), f"{page.name} is missing from the index"


def test_the_architecture_map_names_every_module_of_the_tree():
    """docs/architecture.md's map stays in step with romer/: every module is named there by its file name (the
    one-file-each folders, families/, methods/, tasks/ and rates/, by the folder), and every file it names exists."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text()
    folders_by_name = ("families", "methods", "tasks", "rates", "zoo")
    unnamed = [str(path.relative_to(root)) for path in sorted((root / "romer").rglob("*.py"))
               if path.name != "__init__.py" and not any(part in folders_by_name for part in path.parts)
               and not re.search(rf"(?<![\w/]){re.escape(path.name)}", text)]
    assert unnamed == [], f"docs/architecture.md does not name: {unnamed}"
    assert all(f"{folder}/" in text for folder in folders_by_name)
    block = text[text.index("```\nromer/"):text.index("```\n\n## ")]
    named = set(re.findall(r"\b([a-z_]+\.py)\b", block))
    existing = {path.name for path in (root / "romer").rglob("*.py")} | {path.name for path in (root / "scripts").rglob("*.py")}
    assert named <= existing, f"the map names files that do not exist: {sorted(named - existing)}"
