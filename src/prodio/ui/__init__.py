"""The Gradio user interface: per-user state, page building and mounting.

Kept free of imports so that light modules (``prodio.ui.paths`` for the static routes)
do not pull in Gradio.
"""
