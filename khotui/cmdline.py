"""The next kernel's command line: derived from the running one, edited, and explained.

`next_cmdline()` is the rule `plan`/`load` apply without `--cmdline`: reuse /proc/cmdline minus
the tokens that belong to this boot only (`BOOT_IMAGE=` from the boot loader, `initrd=` which
kexec replaces with its own initrd segment), then append the operator's tokens. `diff_cmdline()`
explains an edit token by token for the TUI's live diff.

The kernel's own reading of a command line is stated here once: `split_cmdline()` (next_arg()),
`kernel_params()` (the parameters before `--`), `cmdline_param()` (the last one wins) and
`kstrtobool()`; the host reader, the checks and the diff all use them. So is the x86
command-line length limit (`accepted_length()`). Imports nothing from khotui.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# bzImage64_load() keeps room for "elfcorehdr=0x<addr>" after the command line even on a normal
# load (arch/x86/kernel/kexec-bzimage64.c): the one statement of the x86 command-line limit.
MAX_ELFCOREHDR_STR_LEN = 30

# Tokens the boot loader adds for this boot only; kexec passes its own initrd.
BOOT_ONLY_KEYS = ("BOOT_IMAGE", "initrd")


def split_cmdline(text: str) -> list[str]:
    """Split like the kernel's next_arg(): whitespace separates, double quotes group."""
    tokens: list[str] = []
    current: list[str] = []
    in_quote = False
    has_token = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
            current.append(ch)
            has_token = True
        elif ch.isspace() and not in_quote:
            if has_token:
                tokens.append("".join(current))
                current, has_token = [], False
        else:
            current.append(ch)
            has_token = True
    if has_token:
        tokens.append("".join(current))
    return tokens


def token_key(token: str) -> str:
    return token.split("=", 1)[0]


def kernel_params(cmdline: str) -> list[str]:
    """The kernel's own parameters, quotes removed: everything up to a bare `--`, which
    parse_args() stops at (init/main.c, kernel/params.c); the rest is init's."""
    # mirrors next_arg() in lib/cmdline.c: whitespace splits outside double quotes
    tokens = [t.replace('"', "") for t in split_cmdline(cmdline)]
    if "--" in tokens:
        tokens = tokens[:tokens.index("--")]
    return tokens


def cmdline_param(cmdline: str, name: str) -> str | None:
    """The value of the last `name=value` kernel parameter ('' for a bare `name`), or None."""
    # parse_early_param()/parse_args() call the handler for every occurrence: the last one wins
    value: str | None = None
    for token in kernel_params(cmdline):
        key, sep, val = token.partition("=")
        if key == name:
            value = val if sep else ""
    return value


def kstrtobool(value: str | None) -> bool | None:
    """True/False as the kernel reads a boolean parameter; None when it rejects the value."""
    # mirrors kstrtobool(), lib/kstrtox.c
    if not value:
        return None
    c = value[0]
    if c in "eEyYtT1":
        return True
    if c in "dDnNfF0":
        return False
    if c in "oO" and len(value) > 1:
        if value[1] in "nN":
            return True
        if value[1] in "fF":
            return False
    return None


def last_bool(cmdline: str, name: str) -> bool | None:
    """The value a boolean parameter `name=` ends with: parsers that call kstrtobool() for
    every occurrence leave the variable unchanged on a value they reject, so the last accepted
    value wins; None when no occurrence sets anything (absent, or only rejected values)."""
    result: bool | None = None
    for token in kernel_params(cmdline):
        key, sep, val = token.partition("=")
        if key == name and sep:
            parsed = kstrtobool(val)
            if parsed is not None:
                result = parsed
    return result


def kho_requested(cmdline: str) -> bool | None:
    """What `kho=` on this command line sets (None: nothing sets it). kho_parse_enable()
    (kernel/liveupdate/kexec_handover.c) runs for every `kho=` before `--` and calls
    kstrtobool(p, &kho_enable); without an accepted value CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT
    decides."""
    return last_bool(cmdline, "kho")


def liveupdate_requested(cmdline: str) -> bool | None:
    """What `liveupdate=` on this command line sets (None: nothing sets it).
    early_liveupdate_param() (kernel/liveupdate/luo_core.c, 7.3) is an early_param calling
    kstrtobool(buf, &luo_global.enabled) for every occurrence; without one LUO is off
    (luo_global.enabled starts false; there is no config default)."""
    return last_bool(cmdline, "liveupdate")


def debugfs_requested(cmdline: str) -> bool | None:
    """What `debugfs=` on this command line sets: True (on), False (off), None (nothing).
    debugfs_kernel() (fs/debugfs/inode.c, 7.3) knows exactly `on`, `off` and `no-mount` (since
    7.x a deprecated alias of `off`, logged as such); any other value changes nothing, and
    without one CONFIG_DEBUG_FS_ALLOW_ALL/ALLOW_NONE decides."""
    result: bool | None = None
    for token in kernel_params(cmdline):
        key, sep, val = token.partition("=")
        if key == "debugfs" and sep:
            if val == "on":
                result = True
            elif val in ("off", "no-mount"):
                result = False
    return result


# kho_scratch= sizes the scratch regions (kho_parse_scratch_size(),
# kernel/liveupdate/kexec_handover.c, 6.16-7.3); 7.4-rc renames scratch to "bootmem" and the
# parameter to kho_bootmem=. khotui reads both as the one parameter they are.
SCRATCH_PARAMS = ("kho_scratch", "kho_bootmem")


@dataclass(frozen=True)
class ScratchSize:
    """A `kho_scratch=`/`kho_bootmem=` value as the kernel reads it: a percentage of the
    kernel's own allocations (`scale`), or fixed lowmem/global/per-node sizes in bytes."""

    param: str                         # which name was given
    value: str
    scale: int | None = None           # N of "N%"
    sizes: tuple[int, int, int] | None = None   # lowmem, global, per node


_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def _memparse(text: str) -> tuple[int, str] | None:
    """lib/cmdline.c memparse(): a number (0x.. hex, 0.. octal, decimal) and a K/M/G/T/P/E
    suffix; (value, rest), or None when no digit was read."""
    m = _NUMBER.match(text)
    if m is None:
        return None
    digits = m.group(1)
    value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 8 if digits[0] == "0" else 10)
    rest = text[m.end():]
    shift = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}.get(rest[:1].upper())
    if shift is not None:
        value <<= shift
        rest = rest[1:]
    return value, rest


def parse_scratch_size(param: str, value: str) -> ScratchSize | None:
    """`value` as kho_parse_scratch_size() (kernel/liveupdate/kexec_handover.c) reads it; None
    when the kernel rejects it (-EINVAL: the default 200% scale stays)."""
    if not value:
        return None
    if value.endswith("%"):
        digits = value[:-1]
        # kstrtouint(s, 10): decimal digits only, at most 10 characters, fits in 32 bits
        if len(value) > 11 or not digits.isascii() or not digits.isdigit() or int(digits) >= 1 << 32:
            return None
        return ScratchSize(param, value, scale=int(digits))
    rest, sizes = value, []
    for i in range(3):
        if i > 0:
            if not rest.startswith(","):
                return None
            rest = rest[1:]
        got = _memparse(rest)
        if got is None:
            return None
        size, rest = got
        sizes.append(size)
    if rest or not sum(sizes):
        return None
    return ScratchSize(param, value, sizes=(sizes[0], sizes[1], sizes[2]))


def scratch_param(cmdline: str) -> tuple[str, str] | None:
    """The last `kho_scratch=` or `kho_bootmem=` before `--`, as (name, value); None if none."""
    found: tuple[str, str] | None = None
    for token in kernel_params(cmdline):
        key, sep, val = token.partition("=")
        if key in SCRATCH_PARAMS:
            found = (key, val if sep else "")
    return found


def _closed(token: str) -> str:
    """A token with an unbalanced double quote, closed at its end. The kernel's next_arg() runs
    an open quote to the end of the line, so `foo="bar` alone means foo=bar; left open, it would
    swallow every token joined after it (an appended kho=on would become part of foo's value)."""
    return token + '"' if token.count('"') % 2 else token


def next_cmdline(current: str, append: str | None = None) -> str:
    """`current` without BOOT_IMAGE=/initrd=, plus `append`; single spaces between tokens."""
    kept = [t for t in split_cmdline(current) if token_key(t) not in BOOT_ONLY_KEYS]
    if append:
        kept += split_cmdline(append)
    return " ".join(_closed(t) for t in kept)


@dataclass
class CmdlineDiff:
    removed: list[str] = field(default_factory=list)      # in the running cmdline, not in the new one
    added: list[str] = field(default_factory=list)        # new tokens
    boot_only_removed: list[str] = field(default_factory=list)  # BOOT_IMAGE=, initrd= dropped
    duplicates: list[str] = field(default_factory=list)   # keys given more than once (last wins)
    kho: str | None = None        # value of the kho= the kernel acts on (cmdline_param())

    def as_dict(self) -> dict[str, list[str] | str | None]:
        return {"removed": self.removed, "added": self.added,
                "boot_only_removed": self.boot_only_removed, "duplicates": self.duplicates,
                "kho": self.kho}


def diff_cmdline(current: str, new: str) -> CmdlineDiff:
    cur = split_cmdline(current)
    nxt = split_cmdline(new)
    diff = CmdlineDiff()
    nxt_set = set(nxt)
    cur_set = set(cur)
    for t in cur:
        if t not in nxt_set:
            (diff.boot_only_removed if token_key(t) in BOOT_ONLY_KEYS else diff.removed).append(t)
    diff.added = [t for t in nxt if t not in cur_set]
    seen: dict[str, int] = {}
    for t in nxt:
        seen[token_key(t)] = seen.get(token_key(t), 0) + 1
    diff.duplicates = [k for k, n in seen.items() if n > 1]
    diff.kho = cmdline_param(new, "kho")
    return diff


def accepted_length(cmdline_size: int | None) -> int | None:
    """The longest command line an x86 image takes, in bytes with its NUL: the setup header's
    `cmdline_size` minus the room kept for `elfcorehdr=` even on a normal load. None when the
    image does not say (arm64, or no setup header)."""
    # mirrors the "Kernel command line too long" test in bzImage64_load(),
    # arch/x86/kernel/kexec-bzimage64.c: cmdline_len (with NUL) + MAX_ELFCOREHDR_STR_LEN
    if not cmdline_size:
        return None
    return max(cmdline_size - MAX_ELFCOREHDR_STR_LEN, 0)


def cmdline_len(cmdline: str) -> int:
    """The command line's length as the kernel counts it, and the one number every screen shows:
    `cmdline_len` of kexec_file_load(2), the bytes plus the trailing NUL
    (kimage_file_prepare_segments(), kernel/kexec_file.c, refuses a buffer whose last byte is
    not NUL; bzImage64_load(), arch/x86/kernel/kexec-bzimage64.c, compares this value with
    cmdline_size). An empty line is 1: khotui passes the lone NUL rather than cmdline_len 0,
    because setup_cmdline() writes cmdline_ptr[cmdline_len - 1] (one byte before the buffer
    for 0)."""
    return len(cmdline.encode()) + 1


def length_text(length: int, room: int | None) -> str:
    """A `cmdline_len()` for the operator, the same words on every screen: "135 of 2017 bytes
    (with the NUL)"; an empty line says it is empty rather than "1 of 2017"."""
    of = f" of {room}" if room is not None else ""
    if length <= 1:
        return f"empty (1{of} bytes: the NUL alone)"
    return f"{length}{of} bytes (with the NUL)"


def quote_for_shell(cmdline: str) -> str:
    return shlex.quote(cmdline)
