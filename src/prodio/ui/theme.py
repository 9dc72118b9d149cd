"""The Gradio theme, matched to ``static/prodio.css`` (same palette, same system fonts).

System fonts only: nothing is fetched from a font CDN, and the login page and the app
look the same. Button colours are one shade darker than Gradio's defaults so that white
text on them passes WCAG AA contrast (4.5:1).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

SYSTEM_FONTS = (
    "system-ui",
    "-apple-system",
    "Segoe UI",
    "Roboto",
    "Helvetica Neue",
    "Arial",
    "sans-serif",
)
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def prodio_theme() -> Any:
    """A ``gr.themes.Default`` in indigo and slate with accessible buttons."""
    theme = gr.themes.Default(
        primary_hue="indigo",
        secondary_hue="indigo",
        neutral_hue="slate",
        radius_size="md",
        font=SYSTEM_FONTS,
        font_mono=MONO_FONTS,
    )
    return theme.set(
        body_background_fill="*neutral_50",
        body_background_fill_dark="*neutral_900",
        body_text_color="*neutral_800",
        body_text_color_dark="*neutral_100",
        block_background_fill="white",
        block_background_fill_dark="*neutral_800",
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_hover="*primary_700",
        button_primary_background_fill_dark="*primary_600",
        button_primary_background_fill_hover_dark="*primary_700",
        button_primary_text_color="white",
        button_primary_text_color_dark="white",
        button_cancel_background_fill="#dc2626",
        button_cancel_background_fill_hover="#b91c1c",
        button_cancel_background_fill_dark="#dc2626",
        button_cancel_background_fill_hover_dark="#b91c1c",
        button_cancel_text_color="white",
        button_cancel_text_color_dark="white",
    )
