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
