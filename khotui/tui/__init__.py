"""The interactive app (Textual). Presentation and flow only: every decision is in the core.

`khotui.tui.app.run_app()` is what `khotui`, `khotui --root DIR` and `khotui --demo` call.
Nothing here reads the host at import time.
"""
