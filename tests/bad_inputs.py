"""The bad inputs khotui is tested against, one row each, and the seeds the fuzzers start from.

`BAD_INPUTS` is the table: each row builds one hostile input below a temporary directory and
says how it reaches khotui (the CLI `khotui status|plan --json --root R --kernel K`, or a reader
function), what must come back (an exit code, a finding's status, a KhotuiError, or a decoder
warning) and a fragment of the message. tests/test_hostile_table.py drives every row through one
parametrized test, which also requires that the message names the file, that it carries a fix,
and that no traceback is ever printed.

`SEEDS` are the real inputs (../shared/kho captures, the heads of the real x86 and arm64
kernels) that tests/test_hostile_parsers.py mutates and bench/fuzz/ seeds its corpora with.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree

KHO_OUT = "sys/kernel/debug/kho/out"
TWO = CAPTURES / "two-nodes" / "sysroot"
KOFF = CAPTURES / "kho-off" / "sysroot"
KERNEL = VM / "bzImage-kho-7.3.4"
ARM64_GZ = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"


# ---- seeds ---------------------------------------------------------------------------------

def _load_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    if not CAPTURES.is_dir():
        return seeds
    for cap in sorted(p for p in CAPTURES.iterdir() if (p / "sysroot").is_dir()):
        for sysroot, tag in ((cap / "sysroot", cap.name),
                             (cap / "next-kernel" / "sysroot", cap.name + "/next")):
            out = sysroot / KHO_OUT
            for fname in ("scratch_phys", "scratch_len"):
                if (out / fname).is_file():
                    seeds[f"{fname}:{tag}"] = (out / fname).read_bytes()
            for kind in ("out", "in"):
                f = sysroot / f"sys/kernel/debug/kho/{kind}/fdt"
                if f.is_file():
                    seeds[f"fdt:{tag}/{kind}"] = f.read_bytes()
                sub = sysroot / f"sys/kernel/debug/kho/{kind}/sub_fdts"
                if sub.is_dir():
                    for blob in sorted(sub.iterdir()):
                        seeds.setdefault(f"sub:{blob.name}", blob.read_bytes())
            if (sysroot / "proc/iomem").is_file():
                seeds[f"iomem:{tag}"] = (sysroot / "proc/iomem").read_bytes()
        for log in sorted(cap.rglob("kernel.log")):
            seeds[f"kernel.log:{log.relative_to(CAPTURES)}"] = log.read_bytes()[:64 << 10]
    if KERNEL.is_file():
        with open(KERNEL, "rb") as f:
            seeds["bzImage"] = f.read(64 << 10)
    if ARM64_GZ.is_file():
        with gzip.open(ARM64_GZ, "rb") as f:
            seeds["arm64-Image"] = f.read(64 << 10)
    return seeds


SEEDS = _load_seeds()


def mutations(seed: bytes, *, words_le: bool = False):
    """A hypothesis strategy of edit lists: byte sets, u32 overwrites, cuts, insertions."""
    from hypothesis import strategies as st
    n = max(len(seed), 1)
    edit = st.one_of(
        st.tuples(st.just("set"), st.integers(0, n - 1), st.integers(0, 255)),
        st.tuples(st.just("word"), st.integers(0, max(n // 4 - 1, 0)),
                  st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                   0x10000, n])),
        st.tuples(st.just("cut"), st.integers(0, n), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, n), st.integers(0, 255)),
    )
    return st.lists(edit, min_size=1, max_size=6).map(lambda e: (e, words_le))


def mutate(seed: bytes, edits) -> bytes:
    edits, little = edits
    data = bytearray(seed)
    for kind, where, value in edits:
        if kind == "set" and where < len(data):
            data[where] = value
        elif kind == "word" and where * 4 + 4 <= len(data):
            data[where * 4:where * 4 + 4] = value.to_bytes(4, "little" if little else "big")
        elif kind == "cut":
            del data[where:]
        elif kind == "insert":
            data[where:where] = bytes([value]) * 4
    return bytes(data)


class Hung(BaseException):
    """Raised by time_limit(). Not a TimeoutError: that is an OSError, which khotui turns into a
    KhotuiError (an accepted answer here) and shutil.copytree collects and goes on after; not
    an Exception either, which `except Exception` would swallow."""


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (Hung) instead of hanging: SIGALRM after `seconds` (main thread only)."""
    def _alarm(signum, frame):
        raise Hung(f"no answer after {seconds} s: it hangs")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- the table -----------------------------------------------------------------------------

@dataclass
class Cli:
    """Run `python -m khotui <args>`; `names` is the file the message must name."""
    args: list[str]
    names: str


@dataclass
class Call:
    """Call a reader function; `names` is the file the error (or result) must name."""
    fn: Callable[[], object]
    names: str


@dataclass
class BadInput:
    id: str
    build: Callable[[Path], Cli | Call]
    exit: int | None = None        # Cli: expected exit code
    finding: str | None = None     # Cli: the finding that must carry the message (else stderr)
    status: str | None = None      # that finding's status ('warn' / 'fail')
    raises: bool = True            # Call: a KhotuiError (else a result with a warning)
    fragment: str = ""             # must appear in the message
    needs_root: bool = False       # builds something only root can (a file owned by another)


def sysroot_copy(tmp: Path, src: Path = TWO) -> Path:
    return copy_tree(src, tmp / "sysroot", writable=True)


def status(root: Path, names: str) -> Cli:
    return Cli(["status", "--json", "--root", str(root)], names)


def plan(kernel: Path | str, names: str | None = None, root: Path = TWO, *extra: str) -> Cli:
    return Cli(["plan", "--json", "--root", str(root), "--kernel", str(kernel), *extra],
               names or str(kernel))


def _edit(rel: str, content: bytes | str, src: Path = TWO, how: str = "status",
          kernel: Path = KERNEL) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        root = sysroot_copy(tmp, src)
        target = root / rel
        if isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)
        # findings name the file as the host path below the snapshot root
        return status(root, rel) if how == "status" else plan(kernel, rel, root)
    return build


def _scratch(phys: str, length: str) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        root = sysroot_copy(tmp)
        (root / KHO_OUT / "scratch_phys").write_text(phys)
        (root / KHO_OUT / "scratch_len").write_text(length)
        return status(root, f"{KHO_OUT}/scratch_phys")
    return build


def _scratch_len_file(phys: str, length: str) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        cli = _scratch(phys, length)(tmp)
        cli.names = cli.names.replace("scratch_phys", "scratch_len")
        return cli
    return build


def _file(name: str, data: bytes, mode: int = 0o644, uid: int | None = None,
          root: Path = TWO) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        p = tmp / name
        p.write_bytes(data)
        os.chmod(p, mode)
        if uid is not None:
            os.chown(p, uid, -1)
        return plan(p, root=root)
    return build


def _special(kind: str) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        if kind == "dir":
            return plan(tmp)
        if kind == "fifo":
            p = tmp / "fifo"
            os.mkfifo(p)
            return plan(p)
        if kind == "device":
            return plan("/dev/null")
        if kind == "loop":
            a, b = tmp / "loop-a", tmp / "loop-b"
            os.symlink(b, a)
            os.symlink(a, b)
            return plan(a)
        if kind == "missing":
            return plan(tmp / "nope")
        raise ValueError(kind)
    return build


def _initrd(data: bytes) -> Callable[[Path], Cli]:
    def build(tmp: Path) -> Cli:
        p = tmp / "initrd.img"
        p.write_bytes(data)
        return Cli(["plan", "--json", "--root", str(TWO), "--kernel", str(KERNEL),
                    "--initrd", str(p)], str(p))
    return build


def _changing_kernel(tmp: Path) -> Call:
    """A kernel that something truncates while khotui reads it (an unfinished copy)."""
    from khotui.image import inspect as image
    path = tmp / "vmlinuz-copying"
    path.write_bytes(KERNEL.read_bytes()[:1 << 20])
    real_pread = os.pread

    def fn():
        calls = []

        def pread(fd, n, off):
            if not calls:
                os.truncate(path, 0x800)
            calls.append(off)
            return real_pread(fd, n, off)
        image.os.pread = pread
        try:
            return image.inspect_kernel(str(path))
        finally:
            image.os.pread = real_pread
    return Call(fn, str(path))


def _fdt(data: bytes, *, name: str = "/sys/kernel/debug/kho/out/fdt") -> Callable[[Path], Call]:
    def build(tmp: Path) -> Call:
        from khotui.fdt import decode_kho_fdt
        return Call(lambda: decode_kho_fdt(data, name), name)
    return build


def _be32(*v: int) -> bytes:
    return struct.pack(f">{len(v)}I", *v)


def _fdt_blob(struct_block: bytes, strings: bytes = b"compatible\0",
              totalsize: int | None = None, off_struct: int | None = None) -> bytes:
    off_s = 0x38 if off_struct is None else off_struct
    off_str = 0x38 + len(struct_block)
    total = off_str + len(strings)
    hdr = _be32(0xD00DFEED, total if totalsize is None else totalsize, off_s, off_str, 0x28,
                17, 16, 0, len(strings), len(struct_block))
    return hdr + b"\0" * 16 + struct_block + strings


_BEGIN, _END_NODE, _PROP, _NOP, _END = 1, 2, 3, 4, 9
_GOOD_STRUCT = (_be32(_BEGIN) + b"\0\0\0\0" + _be32(_PROP, 7, 0) + b"kho-v4\0\0"
                + _be32(_END_NODE, _END))
_ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 4000


def _pe_without_linux() -> bytes:
    head = bytearray(0x400)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HH", head, 0x84, 0x8664, 1)
    struct.pack_into("<H", head, 0x94, 0xF0)
    off = 0x80 + 24 + 0xF0
    head[off:off + 8] = b".text\0\0\0"
    struct.pack_into("<IIII", head, off + 8, 0x100, 0x1000, 0x100, 0x300)
    return bytes(head)


def _iomem_zero() -> str:
    return "".join(f"{'  ' * d}00000000-00000000 : {n}\n"
                   for d, n in ((0, "Reserved"), (0, "System RAM"), (1, "Kernel code")))


BLOCKS_RECORD = "sys/devices/system/memory/khotui-blocks.jsonl"


def _blocks_record(edit: Callable[[list], list] | Callable[[bytes], bytes], *, raw: bool = False,
                   how: str = "topology") -> Callable[[Path], Cli | Call]:
    """A snapshot of two-nodes whose memory block record is edited: `edit` maps its decoded
    lines (header, runs) to new ones, or with `raw` its bytes to new bytes."""
    def build(tmp: Path) -> Cli | Call:
        from khotui.host.memory import read_memory_blocks, read_topology
        from khotui.host.snapshot import write_snapshot
        from khotui.host.sysroot import Sysroot
        root = tmp / "snap"
        write_snapshot(Sysroot(TWO), root)
        path = root / BLOCKS_RECORD
        if raw:
            path.write_bytes(edit(path.read_bytes()))
        else:
            items = edit([json.loads(line) for line in path.read_text().splitlines()])
            path.write_text("".join(json.dumps(i) + "\n" for i in items))
        if how == "status":
            return status(root, BLOCKS_RECORD)
        read = read_topology if how == "topology" else read_memory_blocks
        return Call(lambda: read(Sysroot(root)), BLOCKS_RECORD)
    return build


def _one_run(first: int, count: int, announced: int | None = None) -> Callable[[list], list]:
    def edit(items: list) -> list:
        head, run = items[0], items[1]
        return [{**head, "runs": 1, "blocks": count if announced is None else announced},
                [first, count, *run[2:]]]
    return edit


BAD_INPUTS: list[BadInput] = [
    # -- the KHO FDT (decoder; a corrupt debugfs copy through `status` too)
    BadInput("fdt-zero-length", _fdt(b""), fragment="empty"),
    BadInput("fdt-wrong-magic", _fdt(b"\x7fELF" + b"\0" * 60), fragment="not a flattened device tree"),
    BadInput("fdt-truncated-header", _fdt(_fdt_blob(_GOOD_STRUCT)[:20]), fragment="header cut short"),
    BadInput("fdt-bad-struct-offset", _fdt(_fdt_blob(_GOOD_STRUCT, off_struct=0x7FFFFFF0)),
             fragment="outside"),
    BadInput("fdt-enormous-totalsize", _fdt(_be32(0xD00DFEED, 0xFFFFFFFF, 0x38, 0x40, 0x28, 17,
                                                  16, 0, 0x10, 0x10)), fragment="past the end"),
    BadInput("fdt-nop-loop-without-end", _fdt(_fdt_blob(_be32(_BEGIN) + b"\0\0\0\0"
                                                        + _be32(_NOP) * 512)),
             raises=False, fragment="before FDT_END"),
    BadInput("fdt-nesting-bomb", _fdt(_fdt_blob((_be32(_BEGIN) + b"a\0\0\0") * 200
                                                + _be32(_END))),
             raises=False, fragment="nested deeper"),
    BadInput("fdt-unterminated-node-name", _fdt(_fdt_blob(_be32(_BEGIN) + b"\0\0\0\0"
                                                          + _be32(_BEGIN) + b"abcdefgh")),
             raises=False, fragment="runs past the end"),
    BadInput("fdt-unterminated-strings", _fdt(_fdt_blob(_GOOD_STRUCT, strings=b"compatible")),
             raises=False, fragment="cannot be read"),
    BadInput("fdt-corrupt-debugfs-copy", _edit(f"{KHO_OUT}/fdt", b"\xde\xad\xbe\xef" * 16),
             exit=0, finding="kho-out-fdt", status="warn", fragment="not a flattened device tree"),
    BadInput("fdt-zero-length-debugfs-copy", _edit(f"{KHO_OUT}/fdt", b""),
             exit=0, finding="kho-out-fdt", status="warn", fragment="empty"),
    # -- scratch_phys / scratch_len
    BadInput("scratch-line-count-mismatch", _scratch_len_file("0x1000\n0x2000\n0x3000\n",
                                                              "0x100\n0x100\n"),
             exit=1, finding="kho-enabled", status="fail", fragment="has 2 lines but scratch_phys has 3"),
    BadInput("scratch-non-hex", _scratch("0x76c00000\n0xbanana\n", "0x8000000\n0x0\n"),
             exit=1, finding="kho-enabled", status="fail", fragment="not a 0x-prefixed hex number"),
    BadInput("scratch-overlap", _scratch("0x76c00000\n0x7a000000\n0x40000000\n",
                                         "0x8000000\n0x1000000\n0x1000000\n"),
             exit=1, finding="scratch-overlap", status="fail", fragment="scratch regions overlap"),
    BadInput("scratch-past-end-of-ram", _scratch("0x76c00000\n0x0\n0x7ff0000000\n",
                                                 "0x8000000\n0x0\n0x1000000\n"),
             exit=1, finding="scratch-ram", status="fail", fragment="past the end of RAM"),
    BadInput("scratch-truncated-to-zero", _scratch_len_file("0x76c00000\n0x0\n", ""),
             exit=1, finding="kho-enabled", status="fail", fragment="has 0 lines"),
    # -- /proc/iomem
    BadInput("iomem-bad-nesting", _edit("proc/iomem", "00000000-00000fff : Reserved\n"
                                        "      00001000-00001fff : orphan\n"),
             exit=0, finding="iomem", status="warn", fragment="nested"),
    BadInput("iomem-child-outside-parent", _edit("proc/iomem", "00001000-00001fff : System RAM\n"
                                                 "  00000000-00002fff : Kernel code\n"),
             exit=0, finding="iomem", status="warn", fragment="outside its parent"),
    BadInput("iomem-all-zero-non-root", _edit("proc/iomem", _iomem_zero()),
             exit=0, finding="iomem", status="warn", fragment="hides them from non-root readers"),
    BadInput("iomem-garbage", _edit("proc/iomem", "\x00\xff garbage\n"),
             exit=0, finding="iomem", status="warn", fragment="not 'start-end : name'"),
    # -- kernel images
    BadInput("kernel-zero-length", _file("vmlinuz-empty", b""), exit=2, fragment="empty"),
    BadInput("kernel-truncated-header", _file("vmlinuz-cut", b"MZ" + b"\0" * 0x200 + b"HdrS"),
             exit=2, fragment="truncated bzImage"),
    BadInput("kernel-truncated-payload", lambda tmp: _file(
        "vmlinuz-half", KERNEL.read_bytes()[:64 << 10])(tmp),
             exit=1, finding="kernel-truncated", status="fail", fragment="is truncated"),
    BadInput("kernel-elf-vmlinux", _file("vmlinux", _ELF), exit=1, finding="kernel-image",
             status="fail", fragment="ELF vmlinux"),
    BadInput("kernel-pe-without-linux", _file("grubx64.efi", _pe_without_linux()), exit=1,
             finding="kernel-image", status="fail", fragment="without a Linux boot header"),
    BadInput("kernel-directory", _special("dir"), exit=2, fragment="is a directory"),
    BadInput("kernel-fifo", _special("fifo"), exit=2, fragment="FIFO"),
    BadInput("kernel-device-node", _special("device"), exit=2, fragment="character device"),
    BadInput("kernel-symlink-loop", _special("loop"), exit=2, fragment="symbolic link loop"),
    BadInput("kernel-missing", _special("missing"), exit=2, fragment="no such"),
    BadInput("kernel-changes-while-read", _changing_kernel, fragment="changed while khotui read it"),
    BadInput("kernel-world-writable", lambda tmp: _file(
        "vmlinuz-ww", KERNEL.read_bytes(), mode=0o666)(tmp),
             exit=1, finding="file-writable", status="fail", fragment="world-writable"),
    BadInput("kernel-owned-by-another-user", lambda tmp: _file(
        "vmlinuz-nobody", KERNEL.read_bytes(), uid=65534)(tmp),
             exit=1, finding="file-writable", status="fail", fragment="owned by", needs_root=True),
    # -- initrds
    BadInput("initrd-zero-length", _initrd(b""), exit=2, fragment="initrd file is empty"),
    BadInput("initrd-fifo", lambda tmp: (os.mkfifo(tmp / "initrd.fifo"), Cli(
        ["plan", "--json", "--root", str(TWO), "--kernel", str(KERNEL), "--initrd",
         str(tmp / "initrd.fifo")], str(tmp / "initrd.fifo")))[1], exit=2, fragment="FIFO"),
    # -- a snapshot's memory block record (khotui/host/blockrecord.py)
    BadInput("blocks-record-cut-short", _blocks_record(lambda b: b[:-20], raw=True, how="status"),
             exit=1, finding="kho-enabled", status="fail", fragment="is cut short"),
    BadInput("blocks-record-empty", _blocks_record(lambda b: b"", raw=True), fragment="is empty"),
    BadInput("blocks-record-not-a-record", _blocks_record(lambda b: b"memory0 online\n", raw=True),
             fragment="not the header of a khotui-blocks record"),
    BadInput("blocks-record-newer-version", _blocks_record(
        lambda i: [{**i[0], "version": 2}, *i[1:]]), fragment="this khotui reads version 1"),
    BadInput("blocks-record-missing-runs", _blocks_record(lambda i: i[:2], how="blocks"),
             fragment="the header announces 2 runs of 16 blocks, the file has 1 runs of 8"),
    BadInput("blocks-record-huge-count", _blocks_record(_one_run(0, 4_000_000_000)),
             fragment="announces 4000000000 memory blocks"),
    BadInput("blocks-record-run-past-address-space", _blocks_record(_one_run(1 << 40, 1)),
             fragment="beyond the 52-bit physical address space"),
    BadInput("blocks-record-run-beyond-header", _blocks_record(_one_run(0, 1 << 20, 8)),
             fragment="more than the header's 1 runs of 8 blocks"),
    BadInput("blocks-record-overlapping-runs", _blocks_record(
        lambda i: [*i[:2], [4, 8, *i[2][2:]]]), fragment="runs are ascending and do not overlap"),
    BadInput("blocks-record-bad-node-id", _blocks_record(
        lambda i: [i[0], [0, 8, [5000], *i[1][3:]], i[2]]), fragment="node ids below 1024"),
    BadInput("blocks-record-garbage-line", _blocks_record(
        lambda b: b.splitlines(keepends=True)[0] + b"\x00\xff\n", raw=True),
             fragment="not a run [first, count, nodes, links, values]"),
    BadInput("blocks-record-nesting-bomb", _blocks_record(
        lambda b: b.splitlines(keepends=True)[0] + b"[" * 60_000 + b"\n", raw=True),
             fragment="not a run [first, count, nodes, links, values]"),
    BadInput("blocks-record-endless-line", _blocks_record(
        lambda b: b.splitlines(keepends=True)[0] + b"[" * 100_000 + b"\n", raw=True),
             fragment="line 2 is longer than 65536 bytes"),
]

assert len({row.id for row in BAD_INPUTS}) == len(BAD_INPUTS)
