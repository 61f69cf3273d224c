"""The command line: `khotui status|plan|snapshot|load|unload`, JSON output and exit codes.

Owns argument parsing, the plain-text and JSON renderings, and the conversation with the operator
around a load (prompts, confirmations). The policy itself (plan on the opened files, refuse, force,
dry run) lives in `khotui.load`; the CLI only asks and prints. May import every core package;
imports `khotui.tui` only to start the interactive app.
"""
