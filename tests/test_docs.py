"""The manual (docs/, mkdocs.yml) builds strictly, and the front page's links lead somewhere: a
page renamed or a heading dropped fails here, not in a reader's browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import REPO


def build(root, out) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_manual_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    built = build(REPO, tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "constraints" / "index.html").exists()
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy)
    page = copy / "docs" / "index.md"
    page.write_text(page.read_text() + "\nSee [the gone page](gone.md).\n")
    broken = build(copy, tmp_path / "broken")
    assert broken.returncode != 0 and "gone.md" in broken.stderr


def test_the_front_pages_links_lead_to_files():
    links = re.findall(r"\]\(([^)#]+)\)", (REPO / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert "docs/verdict.md" in local
    assert [link for link in local if not (REPO / link).exists()] == []
