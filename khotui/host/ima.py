"""IMA: the measurement list the kernel hands to the next kernel, and the segment it needs.

With CONFIG_IMA_KEXEC, `kexec_file_load` adds one segment (ima_add_kexec_buffer(),
security/integrity/ima/ima_kexec.c) of

    ALIGN(ima_get_binary_runtime_size(BINARY) + ima_get_binary_runtime_size(BINARY_STAGED)
          + extra, PAGE_SIZE)

where ima_get_binary_runtime_size() (ima_queue.c) is the list's serialized size plus
sizeof(struct ima_kexec_hdr) = 24, for the staged list too (24 even when it is empty), and
extra is CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB KiB, or PAGE_SIZE / 2 when that is 0. A segment of
more than half of RAM is dropped (pr_err "Binary measurement list too large.", the load goes on
without it).

The size is taken from `binary_runtime_measurements` (a symlink to `..._sha1` on 7.x,
ima_fs_init(), ima_fs.c): ima_measurements_show() writes each entry as pcr, 20-byte sha1
template digest, name length, name, template data length, template data, which is what
get_binary_runtime_size() counts (pcr + TPM_DIGEST_SIZE + name + data). It is a seq_file: its
stat size is 0, so it is read through once, in chunks, and parsed as it streams (bounded
memory). The legacy `ima` template omits two length fields in the file; such lists are counted
with them added back and said to be approximate.

It is read after the load's files were opened (plan inspects them, load opens them first):
their own FILE_CHECK measurements are in it already. What the syscall still adds before the
segment is sized (kimage_file_prepare_segments(), kernel/kexec_file.c: kernel read with
KEXEC_KERNEL_CHECK, initrd with KEXEC_INITRAMFS_CHECK, then ima_kexec_cmdline() with
KEXEC_CMDLINE, then ima_add_kexec_buffer()) is predicted from the policy: a file already in the
list with its current digest is not measured again (iint->measured_pcrs, ima_main.c; and
ima_add_template_entry() drops an entry whose template digest is already there, ima_queue.c).
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from khotui.cmdline import cmdline_param
from khotui.errors import KhotuiError
from khotui.host.sysroot import Sysroot

IMA_DIR = "/sys/kernel/security/ima"
BINARY_LIST = f"{IMA_DIR}/binary_runtime_measurements"
STAGED_LIST = f"{IMA_DIR}/binary_runtime_measurements_staged"      # CONFIG_IMA_STAGING
COUNT_FILE = f"{IMA_DIR}/runtime_measurements_count"
POLICY_FILE = f"{IMA_DIR}/policy"                                   # CONFIG_IMA_READ_POLICY
SECUREBOOT_VAR = ("/sys/firmware/efi/efivars/"
                  "SecureBoot-8be4df61-93ca-11d2-aa0d-e0f62e5b4e8c")
FILES = (BINARY_LIST, STAGED_LIST, COUNT_FILE, POLICY_FILE, SECUREBOOT_VAR)

KEXEC_HDR = 24          # struct ima_kexec_hdr: u16 version, u16, u32, u64 buffer_size, u64 count
TPM_DIGEST_SIZE = 20    # the sha1 template digest of every entry in binary_runtime_measurements
CHUNK = 1 << 20
# hash_digest_size[] (crypto/hash_info.c) for the algorithms IMA lists use
DIGEST_SIZE = {"md5": 16, "sha1": 20, "rmd160": 20, "sha256": 32, "sha384": 48, "sha512": 64,
               "sha224": 28, "sm3": 32, "streebog256": 32, "streebog512": 64,
               "sha3-256": 32, "sha3-384": 48, "sha3-512": 64, "wp512": 64}
# template name -> its fields (ima_template.c builtin_templates[])
TEMPLATES = {"ima-ng": ("d-ng", "n-ng"), "ima-sig": ("d-ng", "n-ng", "sig"),
             "ima-ngv2": ("d-ngv2", "n-ng"), "ima-sigv2": ("d-ngv2", "n-ng", "sig"),
             "ima-buf": ("d-ng", "n-ng", "buf")}
TMPFS_MAGIC = 0x01021994


@dataclass
class MeasurementList:
    """One binary measurement list as the kernel counts it (binary_runtime_size[])."""

    size: int = 0                      # serialized bytes, without the 24-byte header
    count: int = 0
    templates: dict[str, int] = field(default_factory=dict)
    hash_algo: str | None = None       # of the last file entry's d-ng field
    files: dict[str, set[bytes]] = field(default_factory=dict)    # n-ng name -> file digests
    buffers: dict[str, set[bytes]] = field(default_factory=dict)  # ima-buf name -> buffers' digests
    largest_entry: int = 0
    approximate: str | None = None     # why `size` may differ from the kernel's count


@dataclass
class ImaState:
    """What securityfs shows of IMA (None/empty where it is not visible)."""

    present: bool = False
    measurements: MeasurementList | None = None
    staged: MeasurementList | None = None
    staged_visible: bool = False
    count: int | None = None
    policy: str | None = None          # the policy as ima_policy_show() prints it
    secure_boot: bool | None = None    # the SecureBoot EFI variable
    errors: list[str] = field(default_factory=list)


def _fields(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _digest_field(raw: bytes) -> tuple[str | None, bytes]:
    """d-ng / d-ngv2: [type ':'] algo ':' NUL digest (ima_eventdigest_init_common())."""
    head, sep, digest = raw.partition(b"\0")
    if not sep:
        return None, raw
    algo = head.decode(errors="replace").rstrip(":").split(":")[-1]
    return algo, digest


def parse_list(read: Callable[[int], bytes], where: str) -> MeasurementList:
    """Stream a binary_runtime_measurements file (ima_measurements_show(), ima_fs.c)."""
    out = MeasurementList()
    buf, pos, eof = b"", 0, False

    def need(n: int) -> bool:
        """At least n bytes from pos are buffered (reading more as needed); False at EOF."""
        nonlocal buf, pos, eof
        while len(buf) - pos < n and not eof:
            chunk = read(max(CHUNK, n))
            if not chunk:
                eof = True
                break
            buf = buf[pos:] + chunk
            pos = 0
        return len(buf) - pos >= n

    def broken(what: str) -> KhotuiError:
        return KhotuiError(f"not a whole IMA binary measurement list: {what} at entry "
                           f"{out.count}", path=where,
                           fix="read it again from /sys/kernel/security/ima as root")

    while need(1):
        if not need(28):
            raise broken("a cut entry header")
        (namelen,) = struct.unpack_from("<I", buf, pos + 24)
        if namelen > 255:
            raise broken(f"a template name of {namelen} bytes")
        if not need(28 + namelen + 4):
            raise broken("a cut entry")
        name = buf[pos + 28:pos + 28 + namelen].decode(errors="replace")
        head = 28 + namelen
        extra = 0
        if name == "ima":
            # the legacy template: d without its length, n as u32 + string, no data length
            if not need(head + 24):
                raise broken("a cut entry")
            (nlen,) = struct.unpack_from("<I", buf, pos + head + 20)
            length, data_at, extra = head + 24 + nlen, None, 8
            out.approximate = ("the list holds legacy 'ima' template entries, whose file "
                               "layout omits length fields the kernel counts")
        else:
            (dlen,) = struct.unpack_from("<I", buf, pos + head)
            if dlen > 64 << 20:
                raise broken(f"template data of {dlen} bytes")
            length, data_at = head + 4 + dlen, pos + head + 4
        if not need(length):
            raise broken("a cut entry")
        size = length + extra
        out.size += size
        out.count += 1
        out.largest_entry = max(out.largest_entry, size)
        out.templates[name] = out.templates.get(name, 0) + 1
        fields = TEMPLATES.get(name)
        if fields is not None and data_at is not None:
            values = _fields(buf[data_at:pos + length])
            if len(values) >= 2:
                algo, digest = _digest_field(values[0])
                event = values[1].rstrip(b"\0").decode(errors="replace")
                if fields[-1] == "buf" and len(values) >= 3:
                    out.buffers.setdefault(event, set()).add(hashlib.sha256(values[2]).digest())
                else:
                    out.files.setdefault(event, set()).add(digest)
                    if algo:
                        out.hash_algo = algo
        pos += length
    return out


def _read_list(sysroot: Sysroot, path: str) -> MeasurementList:
    try:
        fd = sysroot.open_file(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise KhotuiError("busy: a process has it open for writing (trimming the list)",
                              path=sysroot.display(path), fix="retry when it is done") from None
        raise
    try:
        return parse_list(lambda n: os.read(fd, n), sysroot.display(path))
    finally:
        os.close(fd)


def read_ima(sysroot: Sysroot) -> ImaState:
    """The IMA files of securityfs, each optional; what could not be read is in `errors`."""
    state = ImaState(present=sysroot.exists(IMA_DIR))
    state.secure_boot = read_secure_boot(sysroot)
    if not state.present:
        return state
    try:
        state.measurements = _read_list(sysroot, BINARY_LIST)
    except FileNotFoundError:
        state.errors.append(f"{sysroot.display(BINARY_LIST)}: missing")
    except (OSError, KhotuiError) as exc:
        state.errors.append(_why(exc, sysroot.display(BINARY_LIST)))
    if sysroot.exists(STAGED_LIST):
        try:
            state.staged = _read_list(sysroot, STAGED_LIST)
            state.staged_visible = True
        except (OSError, KhotuiError) as exc:
            state.errors.append(_why(exc, sysroot.display(STAGED_LIST)))
    try:
        state.count = sysroot.read_int(COUNT_FILE, base=10)
    except (OSError, KhotuiError):
        state.count = None
    try:
        state.policy = sysroot.read_optional_text(POLICY_FILE)
    except (OSError, KhotuiError):
        state.policy = None     # EACCES without CONFIG_IMA_READ_POLICY: said by the prediction
    return state


def _why(exc: Exception, where: str) -> str:
    if isinstance(exc, KhotuiError):
        return exc.problem.headline
    assert isinstance(exc, OSError)
    return f"{where}: {exc.strerror or exc}"


def read_secure_boot(sysroot: Sysroot) -> bool | None:
    """The SecureBoot EFI variable: 4 attribute bytes, then 1 value byte (efivarfs)."""
    try:
        data = sysroot.read_bytes(SECUREBOOT_VAR, limit=64) if sysroot.exists(SECUREBOOT_VAR) \
            else None
    except (OSError, KhotuiError):
        return None
    if data is None or len(data) < 5:
        return None
    return data[4] == 1


def secure_boot_from_log(log: str | None) -> bool | None:
    """The kernel's own words: "Secure boot enabled" (x86 setup) or arch_get_secureboot()'s
    "integrity: secureboot mode enabled" / "... disabled" (security/integrity/efi_secureboot.c)."""
    if not log:
        return None
    if "secureboot mode enabled" in log or "Secure boot enabled" in log:
        return True
    if "secureboot mode disabled" in log or "Secure boot disabled" in log:
        return False
    return None


# --- the policy ---------------------------------------------------------------------------

# ima_init_policy(), security/integrity/ima/ima_policy.c: the builtin rules by ima_policy=
_DONT_MEASURE_TMPFS = f"dont_measure fsmagic={TMPFS_MAGIC:#x} func=FILE_CHECK"
_TCB_FILE = ("measure func=FILE_CHECK mask=^MAY_READ euid=0\n"
             "measure func=FILE_CHECK mask=^MAY_READ uid=0")
_ORIGINAL_FILE = "measure func=FILE_CHECK mask=MAY_READ uid=0"
_SB_ARCH = "measure func=KEXEC_KERNEL_CHECK"      # sb_arch_rules[], ima_efi.c


def builtin_policy(cmdline: str, *, secure_boot_arch: bool) -> str:
    """The measure rules the kernel starts with (before any policy is written)."""
    rules = []
    if secure_boot_arch:
        rules.append(_SB_ARCH)
    names = (cmdline_param(cmdline, "ima_policy") or "").split("|")
    if "tcb" in names or "original_tcb" in names:
        rules.append(_DONT_MEASURE_TMPFS)
        rules.append(_TCB_FILE if "tcb" in names else _ORIGINAL_FILE)
    return "\n".join(rules)


@dataclass(frozen=True)
class Access:
    """One measurement hook IMA runs for a file or buffer of the load."""

    func: str               # FILE_CHECK, KEXEC_KERNEL_CHECK, KEXEC_INITRAMFS_CHECK, KEXEC_CMDLINE
    fowner: int | None = None
    fsmagic: int | None = None


def _cmp(value: int | None, op: str, want: str) -> bool | None:
    if value is None:
        return None
    try:
        target = int(want, 0)
    except ValueError:
        return None
    return {"=": value == target, "<": value < target, ">": value > target}[op]


def _matches(rule: list[str], access: Access) -> bool | None:
    """ima_match_rules() for a root process; None when a condition cannot be evaluated."""
    unknown = False
    for token in rule[1:]:
        for op in ("=", "<", ">"):
            if op in token:
                key, want = token.split(op, 1)
                break
        else:
            continue
        if key == "func":
            if want != access.func:
                return False
        elif key == "mask":
            # MAY_READ for an open for reading (ima_file_check()) and for the kexec reads
            inmask = want.startswith("^")
            flag = want.lstrip("^")
            if flag != "MAY_READ" and not inmask:
                return False
            if inmask and flag != "MAY_READ":
                return False
        elif key in ("uid", "euid", "gid", "egid"):
            ok = _cmp(0, op, want)
            if ok is False:
                return False
        elif key == "fowner":
            ok = _cmp(access.fowner, op, want)
            if ok is False:
                return False
            unknown |= ok is None
        elif key == "fsmagic":
            ok = _cmp(access.fsmagic, "=", want)
            if ok is False:
                return False
            unknown |= ok is None
        elif key in ("pcr", "template", "digest_type", "appraise_type", "appraise_flag",
                     "permit_directio", "label"):
            continue
        else:
            unknown = True      # fsuuid, fsname, obj_*, subj_*, keyrings, ...
    return None if unknown else True


def measured_by(policy: str, access: Access) -> tuple[bool, str | None, str | None]:
    """(measured, template= of the deciding rule, why uncertain): the first measure or
    dont_measure rule that matches decides (ima_match_policy(), IMA_DO_MASK actions)."""
    uncertain = None
    for line in policy.splitlines():
        rule = line.split()
        if not rule or rule[0] not in ("measure", "dont_measure"):
            continue
        hit = _matches(rule, access)
        if hit is False:
            continue
        if hit is None:
            uncertain = f"the rule '{line.strip()}' has a condition khotui cannot evaluate"
            if rule[0] == "dont_measure":
                continue
        template = next((t.split("=", 1)[1] for t in rule if t.startswith("template=")), None)
        return rule[0] == "measure", template, uncertain
    return False, None, uncertain


# --- the prediction -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadFile:
    """A file of the load as IMA will name it: `name` is the path d_path() gives (symlinks
    resolved); `digest` computes its hash with an algorithm name, or None."""

    role: str               # "kernel" or "initrd"
    name: str
    fowner: int | None
    fsmagic: int | None
    sig_len: int            # length of an IMA signature in security.ima (the ima-sig 'sig' field)
    digest: Callable[[str], bytes | None]


@dataclass
class ImaSegment:
    """The predicted IMA segment: `memsz` None when it cannot be sized (see `assumptions`)."""

    memsz: int | None
    list_size: int | None
    staged_size: int
    added: list[tuple[str, int]] = field(default_factory=list)   # (what, bytes) the load adds
    dropped: bool = False   # more than half of RAM: ima_add_kexec_buffer() adds no segment
    assumptions: list[str] = field(default_factory=list)
    # read, not guessed, yet worth saying: e.g. the list is within one entry of a page boundary
    notes: list[str] = field(default_factory=list)
    exact: bool = True


def entry_size(template: str, algo: str, name: str, *, sig_len: int = 0,
               buf_len: int = 0) -> int | None:
    """get_binary_runtime_size() (ima_queue.c) of one entry, from the field formats of
    ima_template_lib.c; None for a template khotui does not know."""
    fields = TEMPLATES.get(template)
    dsize = DIGEST_SIZE.get(algo)
    if fields is None or dsize is None:
        return None
    data = 0
    for f in fields:
        if f == "d-ng":
            data += 4 + len(algo) + 2 + dsize
        elif f == "d-ngv2":
            data += 4 + len("ima:") + len(algo) + 2 + dsize
        elif f == "n-ng":
            data += 4 + len(name.replace(" ", "_").encode()) + 1
        elif f == "sig":
            data += 4 + sig_len
        elif f == "buf":
            data += 4 + buf_len
    return 4 + TPM_DIGEST_SIZE + 4 + len(template) + 4 + data


def predict_segment(state: ImaState, *, config: dict[str, str] | None, running_cmdline: str,
                    files: list[LoadFile], next_cmdline: bytes, page_size: int,
                    mem_total_kb: int | None, policy_guess: str | None = None) -> ImaSegment:
    """The segment ima_add_kexec_buffer() will add, from the list as read now."""
    cfg = config or {}
    extra_kb = int(cfg.get("CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB", "0") or 0)
    extra = extra_kb * 1024 if extra_kb > 0 else page_size // 2
    lst = state.measurements
    seg = ImaSegment(memsz=None, list_size=None if lst is None else lst.size,
                     staged_size=0 if state.staged is None else state.staged.size)
    if lst is None:
        seg.exact = False
        why = "; ".join(state.errors) or (
            "no IMA in securityfs (/sys/kernel/security/ima)" if not state.present
            else "the list was not readable")
        seg.assumptions.append(
            f"CONFIG_IMA_KEXEC: the IMA measurement list size is unknown ({why}); the IMA "
            f"segment is sized for an empty list (one page) — a long list makes it larger and "
            f"moves the segments after it. Read {BINARY_LIST} as root (or snapshot it)")
        seg.memsz = _align(2 * KEXEC_HDR + extra, page_size)
        return seg
    if lst.approximate:
        seg.exact = False
        seg.assumptions.append(f"IMA list size approximate: {lst.approximate}")
    if state.present and not state.staged_visible and cfg.get("CONFIG_IMA_STAGING") == "y":
        seg.exact = False
        seg.assumptions.append("CONFIG_IMA_STAGING: the staged list was not readable; assumed empty")
    policy = state.policy
    if policy is None:
        policy = policy_guess if policy_guess is not None else builtin_policy(
            running_cmdline, secure_boot_arch=False)
        seg.exact = False
        seg.assumptions.append(
            f"IMA policy not readable ({POLICY_FILE} needs CONFIG_IMA_READ_POLICY and root): "
            f"assumed the boot policy from ima_policy= on /proc/cmdline"
            f"{' (no measure rules)' if not policy.strip() else ''}; a policy written since "
            f"(e.g. /etc/ima/ima-policy, loaded by systemd) can add entries for the kernel, "
            f"initrd or command line")
    template_default = cfg.get("CONFIG_IMA_DEFAULT_TEMPLATE", "ima-ng").strip('"') or "ima-ng"
    template_default = cmdline_param(running_cmdline, "ima_template") or template_default
    algo = lst.hash_algo or cmdline_param(running_cmdline, "ima_hash") or \
        cfg.get("CONFIG_IMA_DEFAULT_HASH", "sha256").strip('"') or "sha256"
    for f in files:
        funcs = ["FILE_CHECK",
                 "KEXEC_KERNEL_CHECK" if f.role == "kernel" else "KEXEC_INITRAMFS_CHECK"]
        decided = [measured_by(policy, Access(fn, f.fowner, f.fsmagic)) for fn in funcs]
        for _m, _t, doubt in decided:
            if doubt:
                seg.exact = False
                seg.assumptions.append(f"IMA policy for the {f.role}: {doubt}; assumed it applies")
        hits = [(m, t) for m, t, _ in decided if m]
        if not hits:
            continue
        known = lst.files.get(f.name.replace(" ", "_"))
        if known:
            digest = f.digest(algo)
            if digest is not None and digest in known:
                continue    # measured already: not again (measured_pcrs / the hash table)
        template = hits[0][1] or template_default
        size = entry_size(template, algo, f.name, sig_len=f.sig_len)
        if size is None:
            seg.exact = False
            seg.assumptions.append(f"IMA template {template} or hash {algo}: entry size of the "
                                   f"{f.role} unknown to khotui; not counted")
            continue
        seg.added.append((f"{f.role} {f.name} ({template})", size))
    if next_cmdline:
        # ima_kexec_cmdline() (ima_main.c) measures the buffer against the kernel file's inode,
        # so fowner/fsmagic conditions are the kernel's
        kernel = next((f for f in files if f.role == "kernel"), None)
        measured, tmpl, doubt = measured_by(policy, Access(
            "KEXEC_CMDLINE", kernel.fowner if kernel else None, kernel.fsmagic if kernel else None))
        if doubt:
            seg.exact = False
            seg.assumptions.append(f"IMA policy for the command line: {doubt}")
        seen = hashlib.sha256(next_cmdline).digest() in lst.buffers.get("kexec-cmdline", set())
        if measured and not seen:
            # process_buffer_measurement() uses ima-buf unless the rule names a template
            template = tmpl or "ima-buf"
            size = entry_size(template, algo, "kexec-cmdline", buf_len=len(next_cmdline))
            if size is None:
                seg.exact = False
                seg.assumptions.append(f"IMA template {template}: command line entry not counted")
            else:
                seg.added.append(("kexec-cmdline (ima-buf)", size))
    total = lst.size + sum(n for _, n in seg.added)
    runtime = total + KEXEC_HDR + seg.staged_size + KEXEC_HDR + extra
    seg.memsz = _align(runtime, page_size)
    if mem_total_kb and (seg.memsz // page_size) > (mem_total_kb * 1024 // page_size) // 2:
        seg.dropped = True
        seg.assumptions.append("IMA: the measurement list is more than half of RAM: "
                               "ima_add_kexec_buffer() adds no segment (\"Binary measurement "
                               "list too large.\"), and the next kernel starts a new list")
    room = seg.memsz - runtime
    step = max(lst.largest_entry, 1)
    if room < step:
        # the size was read, so the prediction is exact for the list as it is now; the
        # caution goes with it as a note
        seg.notes.append(
            f"IMA: the list ({total + 2 * KEXEC_HDR + seg.staged_size} bytes with headers, "
            f"{extra} extra) is {room} bytes short of the next page boundary, less than one "
            f"entry ({step} bytes): any measurement before the load grows the segment by a "
            f"page and moves the segments after it")
    return seg


def _align(value: int, page: int) -> int:
    return (value + page - 1) // page * page


def file_digest(fd: int, algo: str) -> bytes | None:
    """The file's hash as IMA records it, from the descriptor (pread: its offset untouched)."""
    try:
        h = hashlib.new(algo)
    except ValueError:
        return None
    offset = 0
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            return h.digest()
        h.update(chunk)
        offset += len(chunk)
