"""The figures' gallery: the README's section of results, generated from the CSVs that `dissipate figures` wrote, so
that no number in it can drift from them. It leads with the claims' verdicts, then shows each figure with its
headline numbers.

    python -m dissipate.analyses.gallery figures README.md   # rewrite the README's gallery from figures/*.csv

A test checks that the README's gallery is what `gallery("figures")` gives.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .._io import atomic_write
from . import ANALYSES, claims
from ._common import read_cached

START = "<!-- gallery: generated from figures/*.csv by `python -m dissipate.analyses.gallery figures README.md` -->"
END = "<!-- end of the generated gallery -->"


def gallery(out: str | os.PathLike = "figures") -> str:
    """The Markdown of the results in `out` (its paths relative to the folder that holds `out`): the claims table,
    then every figure with its headline numbers, then the tables."""
    out = Path(out)
    frames = {name: read_cached(out / f"{name}.csv") for name in ANALYSES if (out / f"{name}.csv").is_file()}
    parts = []
    if claims.NAME in frames:
        frame = frames[claims.NAME]
        parts += [f"The paper's claims, {frame['scale'].iloc[0]}:", "", *claims.verdict_table(frame), "",
                  f"The rule and each claim's measure: [{out.name}/{claims.NAME}.md]({out.name}/{claims.NAME}.md).",
                  ""]
    for name, frame in frames.items():
        module = ANALYSES[name]
        if name == claims.NAME or not len(frame):
            continue
        if hasattr(module, "draw"):
            parts.append(f"![{module.DESCRIPTION}]({out.name}/{name}.png)")
        else:
            parts.append(f"[{out.name}/{name}.md]({out.name}/{name}.md): {module.DESCRIPTION}.")
        parts += [f"- {line}" for line in module.headline(frame)] + [""]
    return "\n".join([START, "", *parts, END])


def splice(document: str, section: str) -> str:
    """`document` with the text between START and END (markers included) replaced by `section`."""
    if START not in document or END not in document:
        raise ValueError(f"the document has no gallery markers ({START} ... {END})")
    before, rest = document.split(START, 1)
    return before + section + rest.split(END, 1)[1]


def main(argv: list[str]) -> None:
    out, readme = Path(argv[0]), Path(argv[1])
    text = splice(readme.read_text(), gallery(out))
    atomic_write(readme, lambda f: f.write(text.encode()))


if __name__ == "__main__":
    main(sys.argv[1:])
