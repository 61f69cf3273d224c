"""Kept only so code written against the old facade still imports: the host status is
khotui.plan.status, the dry run khotui.plan.dryrun, and both are exported by khotui.plan.
New code imports from khotui.plan; delete this module once nothing imports it."""

from khotui.plan.dryrun import PlanRequest, PlanResult, cmdline_findings, plan_load
from khotui.plan.status import HostStatus, context_for, host_status

__all__ = ["HostStatus", "PlanRequest", "PlanResult", "cmdline_findings", "context_for",
           "host_status", "plan_load"]
