"""The Wikipedia calibration/evaluation split (needs gensim's bundled dump)."""

from __future__ import annotations

import pytest

pytest.importorskip("gensim", reason="the Wikipedia text needs gensim (qcbo[llm])")

from pruning.llm.text import clean, wiki_articles, wiki_text  # noqa: E402


def test_clean_removes_marks_and_blank_runs():
    assert clean("'''Bold''' and ''it''\n\n\n\nnext ") == "Bold and it\n\nnext"


def test_split_is_fixed_by_article_and_disjoint():
    articles = wiki_articles()
    assert len(articles) == 100
    assert all(len(text) >= 2000 and "'''" not in text for _, text in articles)
    cal, ev = wiki_text("calibration"), wiki_text("evaluation")
    assert ev.startswith(articles[4][1][:200]) and cal.startswith(articles[0][1][:200])
    assert articles[4][1] not in cal and articles[0][1] not in ev
    assert 3.5 < len(cal) / len(ev) < 5.5
    assert 400_000 < sum(len(t.split()) for _, t in articles) < 560_000
