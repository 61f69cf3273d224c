"""Reviewing a host and planning a load: the facade the CLI and the TUI share.

Owns the host status (`status.py`: everything `khotui status` shows), the pre-flight checks
(`checks.py`), and the dry run (`dryrun.py`, `plan_load`): the kernel, initrd and command line,
the placement simulation and the checks that need them. Reads the host through `khotui.host`
(`host_status()`, then `read_plan_inputs()`), then plans without touching it. May import
`host`, `fdt`, `image`, `placement` and the shared base modules; never `load`, `cli` or `tui`.
"""

from khotui.plan.dryrun import (
    NextConfig,
    PlanInputs,
    PlanRequest,
    PlanResult,
    cmdline_findings,
    dry_run,
    plan_load,
    read_next_config,
    read_plan_inputs,
)
from khotui.plan.status import HostStatus, context_for, host_status

__all__ = ["HostStatus", "NextConfig", "PlanInputs", "PlanRequest", "PlanResult",
           "cmdline_findings", "context_for", "dry_run", "host_status", "plan_load",
           "read_next_config", "read_plan_inputs"]
