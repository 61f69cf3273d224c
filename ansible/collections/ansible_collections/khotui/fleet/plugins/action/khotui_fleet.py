"""khotui.fleet.khotui_fleet: the controller's side of a fleet live update.

Runs on the controller only (no connection, nothing on a host changes). It owns the one
record of the rollout, the fleet state, which the playbook keeps as the fact `khotui_fleet` of
localhost, and every verdict in it:

  step=gate    after the preflight: each host's verdict from its `khotui_preflight` result
               (would-fail, unreachable, or not-loaded while it waits to load), the gate's
               decision against khotui_max_fail_percentage, and the hosts to load.
  step=batch   after each load batch: each host's verdict from its load, exec and verify
               results; a failure in the batch stops the rollout before the next batch.
  step=report  the report, JSON, written to a temp file renamed into place, and the per-host
               table; `stopped` says why the play must fail, if it must.

The gate and every batch write the report too, so a run interrupted half-way still leaves the
last known state on disk; the report play at the end writes the final one.

Verdicts: would-fail (the plan fails, or the host's input is bad), not-loaded (it fits but
was not loaded: gate stopped, rollout stopped, check mode, or its load failed), loaded (the
load succeeded; on a snapshot, `dry_run` true: nothing was loaded, the plan would succeed),
verified, failed-verify, unreachable.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from ansible import context
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

SCHEMA = "khotui.fleet-report/1"
VERDICTS = ("would-fail", "not-loaded", "loaded", "verified", "failed-verify", "unreachable")
FAILING_PREFLIGHT = ("would-fail", "unreachable")


def _plain(value):
    """Ansible's templated values as plain JSON types (its tagged str/dict subclasses)."""
    return json.loads(json.dumps(value, default=str))


def _result(hostvars, host, name):
    try:
        value = hostvars[host].get(name)
    except Exception:  # an undefined or unrenderable variable: no result to read
        return None
    return _plain(value) if isinstance(value, dict) else None


def _var(hostvars, host, name, default=None):
    try:
        value = hostvars[host].get(name, default)
    except Exception:
        return default
    return _plain(value)


def _host_entry(verdict, **fields):
    entry = {"verdict": verdict, "errno": None, "checks_failed": [], "dry_run": False,
             "fits": None, "message": None, "error": None, "phase": "preflight", "batch": None,
             "receipt": None, "note": None}
    entry.update(fields)
    return entry


def _error_text(r):
    e = r.get("error") if isinstance(r.get("error"), dict) else None
    if e:
        return e
    return {"message": r.get("msg") or "failed", "path": None, "fix": None}


def preflight_entry(r, dry_run):
    """A host's entry from its khotui_plan result `r` (None: it never ran)."""
    if r is None:
        return _host_entry("unreachable", dry_run=dry_run,
                           error={"message": "no preflight result (the host did not run it)",
                                  "path": None, "fix": "check the host is reachable"})
    if r.get("unreachable"):
        return _host_entry("unreachable", dry_run=dry_run,
                           error={"message": r.get("msg") or "unreachable", "path": None,
                                  "fix": "check the host is reachable, then run again"})
    if r.get("failed"):
        # bad input on the host (no kernel file, no khotui, unreadable snapshot): it cannot
        # take this update as given, which is what would-fail tells the operator
        return _host_entry("would-fail", dry_run=dry_run, fits=False, error=_error_text(r))
    fits = bool(r.get("fits"))
    return _host_entry("not-loaded" if fits else "would-fail", fits=fits, dry_run=dry_run,
                       errno=r.get("errno"), checks_failed=list(r.get("checks_failed") or []),
                       message=r.get("message"), exact=r.get("exact"),
                       failures=r.get("failures") or [])


def _ran(r):
    return isinstance(r, dict) and not r.get("skipped")


def batch_entry(entry, load, exec_, reachable, back, verify):
    """A loading host's entry after its batch; (entry, failed?) where failed stops the rollout."""
    entry = dict(entry)
    if not _ran(load):
        return entry, False
    entry["phase"] = "load"
    if load.get("unreachable"):
        entry.update(verdict="unreachable", error={"message": load.get("msg"), "path": None,
                                                   "fix": "check the host, then run again"})
        return entry, True
    if load.get("failed"):
        entry.update(verdict="not-loaded", errno=load.get("errno"),
                     checks_failed=list(load.get("checks_failed") or entry["checks_failed"]),
                     error=_error_text(load))
        return entry, True
    entry["dry_run"] = bool(load.get("dry_run"))
    entry["receipt"] = load.get("receipt")
    entry["verdict"] = "loaded"
    if entry["dry_run"]:
        entry["note"] = ("dry run: the host is a snapshot (khotui_root), so nothing was loaded, "
                         "no receipt was written and there is nothing to execute or verify")
        return entry, False
    if not _ran(exec_):
        entry["note"] = ("loaded, not executed (khotui_exec is false); after the kexec run "
                         f"`khotui verify --receipt {entry['receipt']}`")
        return entry, False
    entry["phase"] = "exec"
    if exec_.get("unreachable") or exec_.get("failed"):
        entry["error"] = {"message": f"the kexec command did not start: {exec_.get('msg')}",
                          "path": None, "fix": "the image stays loaded; execute it by hand"}
        return entry, True
    if not _ran(back) or back.get("failed") or back.get("unreachable"):
        why = back if _ran(back) else reachable if _ran(reachable) else {}
        entry.update(verdict="unreachable",
                     error={"message": "not back after the kexec: "
                                       + str(why.get("msg") or "no answer"),
                            "path": None,
                            "fix": f"reach its console; the receipt is at {entry['receipt']}"})
        return entry, True
    entry["phase"] = "verify"
    if not _ran(verify) or verify.get("unreachable"):
        entry.update(verdict="unreachable", error={"message": (verify or {}).get("msg"),
                                                   "path": None, "fix": "check the host"})
        return entry, True
    if verify.get("verified"):
        entry["verdict"] = "verified"
        return entry, False
    entry.update(verdict="failed-verify", checks_failed=list(verify.get("checks_failed") or []),
                 failures=list(verify.get("failures") or []),
                 error={"message": verify.get("msg") or "khotui verify failed",
                        "path": entry["receipt"],
                        "fix": "the host runs the new kernel but not everything the load "
                               "recorded arrived (failures); look at it with `khotui verify "
                               f"--receipt {entry['receipt']}` and `khotui status` there before "
                               "resuming the rollout"})
    return entry, True


def _describe(name, entry):
    what = entry.get("errno") or ""
    if entry["checks_failed"]:
        what += (": " if what else "") + ", ".join(entry["checks_failed"])
    if not what and entry.get("error"):
        what = entry["error"].get("message") or ""
    return f"{name} ({entry['verdict']}{': ' + what if what else ''})"


def summary(state):
    hosts = state.get("hosts", {})
    counts = dict.fromkeys(VERDICTS, 0)
    for e in hosts.values():
        counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
    return {"hosts": len(hosts), "verdicts": counts,
            "dry_run": sum(1 for e in hosts.values() if e.get("dry_run")),
            "gate": state.get("gate"), "stopped": state.get("stopped"),
            "check_mode": bool(state.get("check_mode")),
            "batches": len(state.get("batches", []))}


def table(state):
    hosts = state.get("hosts", {})
    width = max([len("host")] + [len(h) for h in hosts])
    def row(*cells):
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, (width, 13, 14, 7, 0), strict=True)).rstrip()

    lines = [row("host", "verdict", "errno", "dry-run", "failed checks / note")]
    for name in sorted(hosts):
        e = hosts[name]
        detail = ", ".join(e["checks_failed"])
        if not detail and e.get("error"):
            detail = e["error"].get("message") or ""
        if not detail and e.get("dry_run") and e["verdict"] == "loaded":
            detail = "dry run (snapshot): would load; nothing loaded"
        detail = detail or e.get("note") or ""
        lines.append(row(name, e["verdict"], e.get("errno") or "-",
                         "yes" if e.get("dry_run") else "no", detail or "-"))
    s = summary(state)
    lines.append(", ".join(f"{v} {n}" for v, n in s["verdicts"].items() if n)
                 or "no hosts")
    if state.get("stopped"):
        lines.append("STOPPED: " + state["stopped"])
    return lines


def write_report(path, state):
    """The report at `path` (relative: to ansible-playbook's working directory), through a
    temp file in the same directory renamed into place: a reader never sees half of it."""
    report = {"schema": SCHEMA, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "hosts": state.get("hosts", {}), "summary": summary(state),
              "batches": state.get("batches", [])}
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".khotui-report.", dir=directory)
    except OSError as exc:
        raise AnsibleActionFail(f"cannot write the fleet report in {directory}: {exc.strerror}; "
                                "set khotui_report to a file in a writable directory") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise AnsibleActionFail(f"cannot write the fleet report {path}: {exc.strerror}") from None
    return path


def _percent(value):
    try:
        pct = float(str(value).rstrip("%"))
    except ValueError:
        raise AnsibleActionFail(f"khotui_max_fail_percentage is {value!r}, not a number from "
                                "0 to 100") from None
    if not 0 <= pct <= 100:
        raise AnsibleActionFail(f"khotui_max_fail_percentage is {value}, not from 0 to 100")
    return pct


def _batch_size(value):
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise AnsibleActionFail(f"khotui_batch is {value!r}, not a whole number of hosts") from None
    if size < 1:
        raise AnsibleActionFail(f"khotui_batch is {size}; give 1 or more hosts per batch")
    return size


def gate(args, hostvars, check_mode):
    names = list(args.get("hosts") or [])
    hosts = {h: preflight_entry(_result(hostvars, h, "khotui_preflight"),
                                bool(_var(hostvars, h, "khotui_root")))
             for h in names}
    failing = sorted(h for h, e in hosts.items() if e["verdict"] in FAILING_PREFLIGHT)
    max_pct = _percent(args.get("max_fail_percentage", 0))
    pct = 100.0 * len(failing) / len(names) if names else 0.0
    go = bool(names) and pct <= max_pct and not check_mode
    state = {"hosts": hosts, "check_mode": check_mode, "batches": [], "stopped": None,
             "report": args.get("report") or "./khotui-report.json",
             "batch_size": _batch_size(args.get("batch", 1)),
             "gate": {"failing": len(failing), "hosts": len(names), "percent": round(pct, 1),
                      "max_fail_percentage": max_pct, "go": go,
                      "failing_hosts": failing}}
    if not names:
        state["stopped"] = "no hosts in the play: nothing to update"
    elif pct > max_pct:
        described = "; ".join(_describe(h, hosts[h]) for h in failing)
        state["stopped"] = (f"gate: {len(failing)} of {len(names)} hosts ({pct:.1f}%) fail "
                            f"preflight, more than khotui_max_fail_percentage {max_pct:g}%; no "
                            f"host was loaded. Failing: {described}")
    state["load_hosts"] = [h for h in names if go and hosts[h]["fits"]]
    for h in names:
        if hosts[h]["fits"] and not go:
            hosts[h]["note"] = ("check mode: preflight only, nothing loaded" if check_mode
                                else "not loaded: the gate stopped the rollout")
    return state


def batch(args, hostvars, state):
    state = dict(state)
    hosts = dict(state["hosts"])
    members = list(args.get("batch") or [])
    index = len(state["batches"]) + 1
    failed = []
    for h in members:
        if state.get("stopped"):
            hosts[h] = dict(hosts[h], note=f"not loaded: the rollout stopped before batch {index}")
            continue
        entry, bad = batch_entry(hosts[h], *(_result(hostvars, h, n) for n in (
            "khotui_load_result", "khotui_exec_result", "khotui_reachable", "khotui_back",
            "khotui_verify_result")))
        entry["batch"] = index
        hosts[h] = entry
        if bad:
            failed.append(h)
    state["hosts"] = hosts
    state["batches"] = [*state["batches"], {"batch": index, "hosts": members, "failed": failed}]
    if failed and not state.get("stopped"):
        described = "; ".join(_describe(h, hosts[h]) for h in failed)
        state["stopped"] = (f"batch {index} failed, so the rollout stopped before the next "
                            f"batch: {described}")
    return state


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        step = args.get("step")
        hostvars = task_vars.get("hostvars", {})
        # the run's --check, not this task's check_mode (off here, so the report is written)
        check_mode = bool(context.CLIARGS.get("check"))
        if step == "gate":
            state = gate(args, hostvars, check_mode)
        elif step in ("batch", "report"):
            state = _plain(args.get("state") or {})
            if not state:
                state = {"hosts": {}, "batches": [], "check_mode": check_mode,
                         "stopped": "no preflight ran: no host matched the play"}
            if step == "batch":
                state = batch(args, hostvars, state)
        else:
            raise AnsibleActionFail(f"step must be gate, batch or report, not {step!r}")
        path = args.get("report") or state.get("report") or "./khotui-report.json"
        result.update(changed=False, state=state, report=write_report(path, state),
                      table=table(state), stopped=state.get("stopped"),
                      summary=summary(state))
        return result
