"""khotui: prepare a kexec with Kexec HandOver (KHO) on a live Linux host.

The package is a pure core (host readers, decoders, the placement simulator, pre-flight checks,
the syscall wrapper) that never imports Textual, a non-interactive CLI over it (`khotui.cli.main`), and
a thin Textual app on top (`khotui.tui`).
"""

__version__ = "0.1.0"
