"""The figures' gallery, generated from the CSVs that `dissipate figures` wrote, so that no number in the documents can
drift from them. Two generated sections: docs/results.md's gallery leads with the claims' verdicts, then shows each
figure with its headline numbers; the README's claims section is the verdicts alone, with a link to the rest.

    python -m dissipate.analyses.gallery figures README.md docs/results.md   # rewrite both from figures/*.csv

Each section's links are relative to the document that holds it. A test checks that both documents hold what
`claims_section` and `gallery` give from the committed figures/.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from .._io import atomic_write
from . import ANALYSES, claims
from ._common import read_cached

COMMAND = "`python -m dissipate.analyses.gallery figures README.md docs/results.md`"
START = f"<!-- gallery: generated from figures/*.csv by {COMMAND} -->"
END = "<!-- end of the generated gallery -->"
CLAIMS_START = f"<!-- claims: generated from figures/claims.csv by {COMMAND} -->"
CLAIMS_END = "<!-- end of the generated claims -->"


def relative(target: str | os.PathLike, document: str | os.PathLike) -> str:
    """`target`'s path as a link in `document` (a file): relative to the folder that holds it, with forward slashes."""
    folder = os.path.dirname(os.path.abspath(document))
    return Path(os.path.relpath(os.path.abspath(target), folder)).as_posix()


def read_frames(out: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Each analysis's table in `out`, for the analyses that wrote one, in the analyses' order."""
    out = Path(out)
    return {name: read_cached(out / f"{name}.csv") for name in ANALYSES if (out / f"{name}.csv").is_file()}


def claims_lines(frame: pd.DataFrame, rest: str) -> list[str]:
    """The claims' lead line, their verdict table, and `rest`: the line that says where to read on."""
    return [f"The paper's claims, {frame['scale'].iloc[0]}:", "", *claims.verdict_table(frame), "", rest, ""]


def table_link(out: Path, prefix: str, name: str) -> str:
    """A link to `name`.md in `out`, named by the folder (`figures/claims.md`) and pointing through `prefix`."""
    return f"[{out.name}/{name}.md]({prefix}/{name}.md)"


def figure_lines(out: Path, prefix: str, name: str, frame: pd.DataFrame) -> list[str]:
    """One analysis's entry: its figure (or its table's link) and its headline numbers."""
    module = ANALYSES[name]
    if hasattr(module, "draw"):
        entry = f"![{module.DESCRIPTION}]({prefix}/{name}.png)"
    else:
        entry = f"{table_link(out, prefix, name)}: {module.DESCRIPTION}."
    return [entry, *(f"- {line}" for line in module.headline(frame)), ""]


def gallery(out: str | os.PathLike, document: str | os.PathLike) -> str:
    """The Markdown of the results in `out`, for `document` (its links relative to it): the claims table, then every
    figure with its headline numbers, then the tables; between START and END."""
    out = Path(out)
    prefix, frames = relative(out, document), read_frames(out)
    parts = []
    if claims.NAME in frames:
        rule = f"The rule and each claim's measure: {table_link(out, prefix, claims.NAME)}."
        parts += claims_lines(frames[claims.NAME], rule)
    for name, frame in frames.items():
        if name != claims.NAME and len(frame):
            parts += figure_lines(out, prefix, name, frame)
    return "\n".join([START, "", *parts, END])


def claims_section(out: str | os.PathLike, document: str | os.PathLike, results: str | os.PathLike) -> str:
    """The claims' verdict table in `out`, for `document`, with links to the rule (claims.md) and to `results`, the
    document that holds the full gallery; between CLAIMS_START and CLAIMS_END."""
    out = Path(out)
    prefix, frames = relative(out, document), read_frames(out)
    parts = []
    if claims.NAME in frames:
        link = relative(results, document)
        rest = (f"Every figure with its headline numbers: [{link}]({link}); the rule and each claim's measure: "
                f"{table_link(out, prefix, claims.NAME)}.")
        parts = claims_lines(frames[claims.NAME], rest)
    return "\n".join([CLAIMS_START, "", *parts, CLAIMS_END])


def splice(document: str, section: str, start: str = START, end: str = END) -> str:
    """`document` with the text between `start` and `end` (markers included) replaced by `section`."""
    if start not in document or end not in document:
        raise ValueError(f"the document has no gallery markers ({start} ... {end})")
    before, rest = document.split(start, 1)
    return before + section + rest.split(end, 1)[1]


def main(argv: list[str]) -> None:
    """`FIGURES README RESULTS`: the claims section into README, the full gallery into RESULTS; both are spliced
    before either is written, so a document without its markers leaves both as they were."""
    if len(argv) != 3:
        raise SystemExit("usage: python -m dissipate.analyses.gallery FIGURES README RESULTS")
    out, readme, results = (Path(arg) for arg in argv)
    texts = {readme: splice(readme.read_text(), claims_section(out, readme, results), CLAIMS_START, CLAIMS_END),
             results: splice(results.read_text(), gallery(out, results))}
    for path, text in texts.items():
        atomic_write(path, lambda f, text=text: f.write(text.encode()))


if __name__ == "__main__":
    main(sys.argv[1:])
