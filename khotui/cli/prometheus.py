"""`khotui plan --format prometheus`: the dry run in the Prometheus text exposition format.

Pure: a PlanResult (or an error) and the time in, the text out; no I/O, no clock. The CLI
prints it or hands it to khotui.cli.textfile for node_exporter's textfile collector. Format
0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/): every family has its
HELP and TYPE lines and its samples together; label values escape backslash, double quote and
newline, HELP text backslash and newline; no sample carries a timestamp (node_exporter's
textfile collector refuses them), the time of the check is a metric of its own.

The metrics (every one a gauge; `_info` ones have the value 1 and say it in labels):

  khotui_check_success                  1 the dry run ran (exit 0 or 1); 0 it could not (exit 2)
  khotui_check_timestamp_seconds        when the check ran (Unix time): alert on its age
  khotui_check_error_info{message,path,fix}   why it could not run (exit 2 only)
  khotui_plan_would_succeed             1 the load would succeed (exit 0), 0 not (exit 1)
  khotui_kho_enabled                    1 KHO on, 0 off
  khotui_plan_placement_predicted       1 a placement was predicted; 0 none could be (e.g. the
                                        scratch regions are unreadable: see the notes)
  khotui_plan_fits                      1 every segment fits, 0 one fits nowhere; ABSENT when
                                        no placement was predicted (unknown is not a 0 or a 1)
  khotui_plan_exact                     1 every input the kernel uses was read, nothing assumed
  khotui_plan_assumptions               how many inputs were guessed (plan --json: assumptions)
  khotui_plan_errno_info{errno}         the errno the kernel would answer (only when one would)
  khotui_checks_failed                  how many checks fail (plan --json: checks, status fail)
  khotui_plan_check_findings{id,status} findings by check id and status (ok, warn, fail, skip)
  khotui_scratch_bytes{index,kind,node} each KHO scratch region's size (kho_scratch[] order)
  khotui_scratch_free_bytes{index,kind,node}  its size minus the segments the plan put in it
                                        (with fits 0: those placed before the one that fits
                                        nowhere); absent when no placement was predicted
  khotui_plan_segment_bytes{index,name,region}  each segment's memsz (placement order),
                                        and where the plan put it
  khotui_plan_kernel_info{path,release,initrd}  what was planned: the next kernel
  khotui_running_kernel_info{release,arch}      the running kernel
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from khotui.types import FAIL

if TYPE_CHECKING:
    from khotui.plan import PlanResult

Labels = dict[str, str]
Value = int | float | bool


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and newline escaped
    (the only three escapes it has). A path that is not UTF-8 (Python's surrogate escapes)
    is written with its bytes as \\xNN text first, since the format is UTF-8."""
    try:
        raw = value.encode("utf-8", "surrogateescape")     # the bytes the path really has
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "backslashreplace")    # a lone surrogate from elsewhere
    text = raw.decode("utf-8", "backslashreplace")
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its name, HELP text and samples (labels, value), in order."""

    name: str
    help: str
    samples: list[tuple[Labels, Value]] = field(default_factory=list)

    def add(self, value: Value, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} gauge"]
        for labels, value in self.samples:
            inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{inner}}} {format_value(value)}" if labels
                         else f"{self.name} {format_value(value)}")
        return "\n".join(lines) + "\n"


def render(families: Iterable[Family]) -> str:
    return "".join(f.render() for f in families)


def _common(success: bool, now: float) -> list[Family]:
    return [
        Family("khotui_check_success",
               "1 if khotui's dry run ran (plan exit 0 or 1), 0 if it could not (exit 2: see "
               "khotui_check_error_info)").add(success),
        Family("khotui_check_timestamp_seconds",
               "When khotui's dry run ran, in seconds since the Unix epoch").add(round(now, 3)),
    ]


def error_metrics(message: str, path: str | None, fix: str | None, *, now: float) -> str:
    """What a host whose dry run could not run (exit 2: unreadable input, no kernel to plan)
    exposes: it shows up in monitoring as broken, instead of keeping yesterday's answer."""
    return render([*_common(False, now),
                   Family("khotui_check_error_info",
                          "Why khotui's dry run could not run: the message, the file it "
                          "concerns and the fix").add(1, message=message, path=path or "",
                                                      fix=fix or "")])


def _region_labels(index: int, kind: str, node: int | None) -> Labels:
    return {"index": str(index), "kind": kind, "node": "" if node is None else str(node)}


def plan_metrics(result: PlanResult, *, now: float) -> str:
    """The dry run `result` as metrics (module docstring), checked at `now` (Unix time)."""
    status = result.status
    kho = status.kho
    segments = result.segments()
    predicted = result.fits is not None
    families = _common(True, now)
    families.append(Family("khotui_plan_would_succeed",
                           "1 if the load would succeed (plan exit 0), 0 if it would fail "
                           "(exit 1: a failing check or a segment that fits nowhere)")
                    .add(result.would_succeed))
    families.append(Family("khotui_kho_enabled", "1 if Kexec HandOver is on, 0 if off")
                    .add(kho.enabled))
    families.append(Family("khotui_plan_placement_predicted",
                           "1 if the dry run predicted where every segment goes, 0 if it "
                           "could not (e.g. the KHO scratch regions are unreadable; "
                           "khotui_plan_fits is then absent)").add(predicted))
    fits = Family("khotui_plan_fits",
                  "1 if every segment fits (in the KHO scratch regions when KHO is on), 0 if "
                  "one fits nowhere; absent when no placement was predicted")
    if result.fits is not None:
        fits.add(result.fits)
    families.append(fits)
    families.append(Family("khotui_plan_exact",
                           "1 if every input the kernel uses was read from the host and "
                           "nothing was assumed").add(result.exact))
    families.append(Family("khotui_plan_assumptions",
                           "Number of inputs the dry run had to guess (plan --json: "
                           "assumptions)").add(len(result.assumptions)))
    errno = Family("khotui_plan_errno_info",
                   "The errno kexec_file_load would answer, when the dry run predicts one")
    if result.errno:
        errno.add(1, errno=result.errno)
    families.append(errno)
    families.append(Family("khotui_checks_failed",
                           "Number of failing checks (plan --json: checks with status fail)")
                    .add(sum(f.status == FAIL for f in result.findings)))
    by_check = Family("khotui_plan_check_findings",
                      "Findings of the dry run's checks, by check id and status (ok, warn, "
                      "fail, skip)")
    # a check may answer more than once (one finding per LUO session, per file): counted, as
    # the format allows one sample per label set
    for (check, state), n in Counter((f.id, f.status) for f in result.findings).items():
        by_check.add(n, id=check, status=state)
    families.append(by_check)
    scratch = Family("khotui_scratch_bytes", "Size of each KHO scratch region, in kho_scratch[] "
                                             "order (index 0 lowmem, 1 global, then per node)")
    free = Family("khotui_scratch_free_bytes",
                  "Bytes of each KHO scratch region left after the segments the dry run "
                  "placed in it; absent when no placement was predicted")
    for r in kho.scratch if kho.enabled and kho.scratch_known else ():
        labels = _region_labels(r.index, r.kind, r.node)
        scratch.add(r.size, **labels)
        if predicted:
            used = sum(s.memsz for s in segments
                       if s.mem is not None and r.size and r.addr <= s.mem <= r.end)
            free.add(r.size - used, **labels)
    families += [scratch, free]
    seg = Family("khotui_plan_segment_bytes",
                 "Each segment's memsz (page-aligned), by placement order, name and the region "
                 "the dry run put it in (empty: placed nowhere)")
    for n, s in enumerate(segments):
        seg.add(s.memsz, index=str(n), name=s.name, region=s.region or "")
    families.append(seg)
    version = result.kernel.version
    families.append(Family("khotui_plan_kernel_info",
                           "The kernel the dry run planned: its path, release and initrd")
                    .add(1, path=result.request.kernel,
                         release=version.split()[0] if version else "",
                         initrd=result.request.initrd or ""))
    families.append(Family("khotui_running_kernel_info", "The running kernel")
                    .add(1, release=status.boot.osrelease or "", arch=result.arch or ""))
    return render(families)
