"""The documents: every link in the README and the design resolves, nothing cites a design document that the
repository does not hold, and what the Quickstart's commands write by default is ignored by git."""

import inspect
import re
from pathlib import Path

import pytest

from dissipate import cli

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "design.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(document):
    links = [link for link in LINK.findall(document.read_text()) if not link.startswith(("http://", "https://"))]
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: {link} names no file"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), f"{document.name}: {link} names no heading"


def test_nothing_cites_a_design_document_outside_the_repository():
    sources = [*ROOT.glob("dissipate/**/*.py"), *ROOT.glob("benchmarks/*"), *DOCUMENTS]
    for path in sources:
        if path.is_file():
            assert "DESIGN" + ".md" not in path.read_text(errors="replace"), path  # spelt apart, so that no file names it


@pytest.mark.parametrize("command", [cli.probe, cli.figures], ids=lambda command: command.__name__)
def test_a_commands_default_output_is_ignored_by_git_so_a_clone_stays_clean(command):
    default = inspect.signature(command).parameters["out"].default.default  # the typer.Option's default
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert f"/{default}/" in ignored  # so, too, the default is never the committed figures/
