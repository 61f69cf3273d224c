"""Widgets that draw plain values from `khotui.tui.viewmodel`; none reads the host."""
