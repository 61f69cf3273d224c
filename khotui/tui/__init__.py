"""The interactive app (Textual). Presentation and flow only: every decision is in the core.

`khotui.tui.app.run_app()` is what `khotui`, `khotui --root DIR` and `khotui --demo` call.
Nothing here reads the host at import time. The only package that imports Textual, and the
only one allowed private Textual names (in `_hooks.py` alone). May import every core package
(through `viewmodel/`, which maps the core onto what the screens draw), never `khotui.cli`.
"""
