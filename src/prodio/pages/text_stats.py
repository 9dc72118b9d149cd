"""Text statistics: a stateless tool tab (a pure function behind a button)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import gradio as gr

from prodio.pages.base import Tab
from prodio.ui.format import escape_markdown
from prodio.ui.state import UserState

MAX_TEXT_CHARS = 200_000
WORDS_PER_MINUTE = 230
TOP_WORDS = 5

SENTENCE_MARKS = (".", "!", "?", "…")
# Apostrophes (straight and typographic) and hyphens join word parts: "it's", "well-known".
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")
_SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class TextStatistics:
    characters: int
    characters_without_spaces: int
    words: int
    unique_words: int
    sentences: int
    lines: int
    paragraphs: int
    reading_minutes: int
    top_words: tuple[tuple[str, int], ...]


def text_statistics(text: str) -> TextStatistics:
    """Count what there is to count in ``text``; an empty text gives zeros."""
    words = [word.casefold() for word in _WORD.findall(text)]
    stripped = text.strip()
    if stripped:
        sentences = len(_SENTENCE_END.findall(stripped))
        # A last sentence without final punctuation still counts.
        if not stripped.endswith(SENTENCE_MARKS):
            sentences += 1
        paragraphs = len([p for p in _PARAGRAPH_BREAK.split(stripped) if p.strip()])
    else:
        sentences = paragraphs = 0
    frequent = Counter(word for word in words if len(word) > 3).most_common(TOP_WORDS)
    return TextStatistics(
        characters=len(text),
        characters_without_spaces=sum(1 for char in text if not char.isspace()),
        words=len(words),
        unique_words=len(set(words)),
        sentences=sentences,
        lines=len(text.splitlines()),
        paragraphs=paragraphs,
        reading_minutes=math.ceil(len(words) / WORDS_PER_MINUTE),
        top_words=tuple(frequent),
    )


def render_statistics(stats: TextStatistics) -> str:
    """The statistics as a Markdown table."""
    if stats.characters == 0:
        return "Paste or type some text, then press **Analyse**."
    reading = (
        "under a minute" if stats.reading_minutes <= 1 else f"about {stats.reading_minutes} min"
    )
    rows = [
        ("Words", f"{stats.words:,}"),
        ("Unique words", f"{stats.unique_words:,}"),
        ("Characters", f"{stats.characters:,}"),
        ("Characters without spaces", f"{stats.characters_without_spaces:,}"),
        ("Sentences", f"{stats.sentences:,}"),
        ("Lines", f"{stats.lines:,}"),
        ("Paragraphs", f"{stats.paragraphs:,}"),
        ("Reading time", reading),
    ]
    table = "| Measure | Value |\n|---|---:|\n" + "\n".join(
        f"| {name} | {value} |" for name, value in rows
    )
    if stats.top_words:
        common = ", ".join(f"{escape_markdown(word)} ({count})" for word, count in stats.top_words)
        table += f"\n\n**Most frequent words:** {common}"
    return table


def analyse(text: str | None) -> str:
    """Gradio handler: statistics for ``text`` as Markdown."""
    text = text or ""
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(
            f"The text is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}.",
            title="Too long",
            print_exception=False,
        )
    return render_statistics(text_statistics(text))


class TextStatsTab(Tab):
    """Counts words, sentences and reading time. Keeps nothing: a pure function."""

    title = "Text statistics"
    slug = "text_stats"

    def build(self, state: UserState) -> None:
        gr.Markdown(
            "Paste a text to count its words, sentences and reading time. Nothing is stored.",
            elem_classes=["prodio-lead"],
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(
                    label="Text",
                    lines=12,
                    max_lines=30,
                    max_length=MAX_TEXT_CHARS,
                    placeholder="Paste some text…",
                    elem_id="text-stats-input",
                )
                button = gr.Button("Analyse", variant="primary", scale=0, min_width=120)
            with gr.Column(scale=2):
                result = gr.Markdown(
                    render_statistics(text_statistics("")),
                    elem_id="text-stats-result",
                    elem_classes=["prodio-panel"],
                )
        button.click(analyse, inputs=[text], outputs=[result], **self.event(api_name="text_stats"))
