"""The Gradio app: ``build_demo(captioner, vqa) -> gr.Blocks`` (``ui.py``), served by ``mmapp app`` / ``app.py``.

Files: ``ui.py`` layout and handlers, ``service.py`` uploads and batched model calls (the checks and
results are ``mmapp.inference``'s), ``batching.py`` the micro-batcher, ``overlay.py`` attention heat maps,
``examples.py`` example images, ``models_panel.py`` the Models panel; the HTTP API served beside the
UI is ``mmapp/http_api.py``. Importing this package loads
neither Gradio nor a model; ``build_demo`` and ``launch_demo`` are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_demo", "launch_demo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # heavy: gradio; importing mmapp.app must not load it
        from mmapp.app import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'mmapp.app' has no attribute {name!r}")
