"""The repository stands on its own: every relative link of the README and docs/ resolves, and nothing
in the documentation, the sources, the tests or the scripts points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://|mailto:|#", target):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or ROOT not in path.parents and path != ROOT:
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_nothing_points_outside_the_repository():
    outside = re.compile(r"\.\./shared|parents\[[0-9]\]\s*/\s*[\"']shared")
    hits = []
    for folder in ("src", "tests", "scripts", "docs", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".sh", ".yaml", ".jsonl") and path != Path(__file__).resolve():
                if outside.search(path.read_text(encoding="utf-8", errors="replace")):
                    hits.append(str(path.relative_to(ROOT)))
    if outside.search((ROOT / "README.md").read_text(encoding="utf-8")):
        hits.append("README.md")
    assert hits == []


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("\n") <= 250
    assert not re.search(r"\bsession\b|issue #\d+", text, re.IGNORECASE)
