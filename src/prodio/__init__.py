"""prodio: put Gradio apps into production."""

import os

# Gradio reads this when it first builds anything; prodio makes no network call at run
# time that the operator did not configure.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__version__ = "0.1.0"
