"""The browser page (`diffkit serve`): generate with a live view, edit, interpolate and explain, in gradio.

The page holds no maths: `handlers` bound the page's values and call `Bundle.sample_steps`, `diffkit.edit` and
`diffkit.viz`; `models` finds the bundles at start-up and serves them by name only; `app` is the gradio layout.
gradio comes with the `web` extra; `require_gradio()` says how to install it in one sentence.
"""

from __future__ import annotations

import importlib.util

from diffkit.errors import DiffkitError


def require_gradio() -> None:
    """Refuse in one sentence when the `web` extra (gradio) is not installed."""
    if importlib.util.find_spec("gradio") is None:
        raise DiffkitError("The web page needs gradio, which is not installed; run pip install 'diffkit[web]'.")
