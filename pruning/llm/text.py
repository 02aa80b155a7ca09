"""Real English text: gensim's bundled, shortened English Wikipedia dump.

Protocol (fixed, the same on every run):

- Source: ``gensim.test.utils.datapath(WIKI_DUMP)``, read with gensim's ``extract_pages``
  and cleaned with ``filter_wiki``; ``'''``/``''`` (bold/italic marks) are removed, runs of
  three or more newlines become one blank line and surrounding whitespace is stripped.
- Articles shorter than ``MIN_CHARS`` = 2000 characters after cleaning are dropped (100
  articles remain, ~479k words), kept in dump order.
- Split by article: article i (0-based, in that order) is *evaluation* when
  ``i % 5 == 4`` (20 articles) and *calibration* otherwise (80 articles). No article
  contributes to both.
- Each part is the articles joined by ``"\\n\\n"``.
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import re
from typing import Literal

from qcbo.errors import BackendUnavailableError

__all__ = ["WIKI_DUMP", "MIN_CHARS", "EVAL_EVERY", "clean", "wiki_articles", "wiki_text"]

WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_CHARS = 2000
#: Every EVAL_EVERY-th article (index % EVAL_EVERY == EVAL_EVERY - 1) is held out.
EVAL_EVERY = 5

_BLANKS = re.compile(r"\n{3,}")


def clean(text: str) -> str:
    """Remove bold/italic marks and collapse blank-line runs."""
    text = text.replace("'''", "").replace("''", "")
    return _BLANKS.sub("\n\n", text).strip()


@functools.lru_cache(maxsize=1)
def wiki_articles() -> tuple[tuple[str, str], ...]:
    """((title, cleaned text), ...) of the articles with >= MIN_CHARS characters."""
    if importlib.util.find_spec("gensim") is None:
        raise BackendUnavailableError("the Wikipedia text needs gensim; run: pip install gensim")
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath

    articles = []
    with bz2.BZ2File(datapath(WIKI_DUMP)) as fh:
        for title, raw, _pageid in extract_pages(fh):
            text = clean(filter_wiki(raw))
            if len(text) >= MIN_CHARS:
                articles.append((title, text))
    return tuple(articles)


def wiki_text(part: Literal["calibration", "evaluation"]) -> str:
    """The calibration or evaluation part of the dump (see the module docstring)."""
    if part not in ("calibration", "evaluation"):
        raise ValueError(f"part must be 'calibration' or 'evaluation', got {part!r}")
    held_out = part == "evaluation"
    chosen = [text for i, (_t, text) in enumerate(wiki_articles())
              if (i % EVAL_EVERY == EVAL_EVERY - 1) == held_out]
    return "\n\n".join(chosen)
