"""khotui.fleet.khotui_target: the options khotui_plan and khotui_load share (what to load)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  khotui_bin: {description: khotui on the target, type: str, default: khotui}
  kernel: {description: kernel image on the target, or C(default), type: str, required: true}
  initrd: {description: initrd on the target, type: str}
  append: {description: text added to the running command line, type: str}
  cmdline: {description: the exact next command line, type: str}
"""
