"""The text statistics tool: a pure function."""

from __future__ import annotations

import gradio as gr
import pytest

from prodio.pages.text_stats import MAX_TEXT_CHARS, analyse, text_statistics


def test_counts_of_a_small_text() -> None:
    stats = text_statistics("Hello world. It's a fine day!\n\nSecond paragraph here")
    assert stats.words == 9
    assert stats.sentences == 3
    assert stats.paragraphs == 2
    assert stats.lines == 3
    assert stats.characters == len("Hello world. It's a fine day!\n\nSecond paragraph here")
    assert stats.characters_without_spaces == 43
    assert stats.reading_minutes == 1


def test_empty_text_gives_zeros_and_a_hint() -> None:
    stats = text_statistics("   ")
    assert (stats.words, stats.sentences, stats.paragraphs) == (0, 0, 0)
    assert "press **Analyse**" in analyse("")
    assert "press **Analyse**" in analyse(None)


def test_frequent_words_are_case_folded_and_escaped() -> None:
    result = analyse("Gradio gradio GRADIO __init__ __init__ tool")
    assert "gradio (3)" in result
    assert r"\_\_init\_\_ (2)" in result


def test_unicode_words_count() -> None:
    assert text_statistics("Größe über naïve café").words == 4


def test_reading_time_rounds_up() -> None:
    assert text_statistics("word " * 231).reading_minutes == 2
    assert "about 2 min" in analyse("word " * 231)


def test_too_long_text_is_refused() -> None:
    with pytest.raises(gr.Error, match="the limit is 200,000"):
        analyse("x" * (MAX_TEXT_CHARS + 1))
