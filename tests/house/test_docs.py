"""The README is a front door (at most 10 KB) and every relative link of the documentation leads somewhere: the
file exists and, for a ``#fragment``, the heading does."""

from __future__ import annotations

import re
from pathlib import Path

from .scan import ROOT

README_MAX_BYTES = 10 * 1024
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def documents(root: Path) -> list[Path]:
    return [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def broken_links(root: Path) -> list[str]:
    broken = []
    for doc in documents(root):
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # https:, mailto: ... : not ours to check here
                continue
            path, _, fragment = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(root)}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{doc.relative_to(root)}: {target} (no such heading)")
    return broken


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= README_MAX_BYTES
    assert text.count("```bash") >= 1 and "bash scripts/setup.sh" in text and "bash scripts/test.sh" in text


def test_every_relative_link_resolves():
    assert len(documents(ROOT)) >= 8
    assert broken_links(ROOT) == []


def test_a_planted_broken_link_and_a_missing_heading_are_seen(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "CONTRIBUTING.md").write_text("# Contributing\n")
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Who sees what\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#who-sees-what) [web](https://example.org/x) [gone](docs/b.md) [bad](docs/a.md#nothing)\n"
    )
    assert broken_links(tmp_path) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#nothing (no such heading)",
    ]
