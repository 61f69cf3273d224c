"""Reviewing a host and planning a load: the facade the CLI and the TUI share.

Owns the host status (everything `khotui status` shows), the pre-flight checks, and the dry run
(`plan_load`): the kernel, initrd and command line, the placement simulation and the checks that
need them. Reads the host through `khotui.host` up front; may import `host`, `fdt`, `image`,
`placement` and the shared base modules, never `load`, `cli` or `tui`.
"""
