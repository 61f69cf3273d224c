"""Property tests for every parser of untrusted input: a result or a KhotuiError, nothing else.

Each parser gets random and mutated-real input (the captures in ../shared/kho and the real
kernels' headers). Besides "no other exception" each example must finish in seconds (hypothesis
deadline, plus a hard per-test alarm), and headers that claim huge sizes must not make the
parser allocate them (tracemalloc peak). The FDT decoders' own fuzzing is tests/test_fdt_fuzz.py;
here they are only checked for memory against huge claims and for the sub-blob names not
covered there.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import tracemalloc
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from khotui.cmdline import diff_cmdline, kstrtobool, next_cmdline, split_cmdline
from khotui.errors import KhotuiError
from khotui.host.boot import cmdline_param, cmdline_tokens, parse_config, parse_meminfo
from khotui.host.iomem import parse_iomem
from khotui.host.kernellog import learn_purgatory, parse_kernel_log, parse_kernel_log_all
from khotui.host.kernels import parse_bls_entry, version_key
from khotui.host.kho import parse_scratch_lines
from khotui.host.memory import parse_list
from khotui.image.inspect import inspect_initrd, inspect_kernel
from tests.bad_inputs import SEEDS, mutate, mutations, time_limit

HOSTILE = settings(max_examples=200, deadline=timedelta(seconds=5), derandomize=False,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.function_scoped_fixture])
PER_TEST_SECONDS = 120


@pytest.fixture(autouse=True)
def _hard_limit():
    """No test here may hang: SIGALRM after PER_TEST_SECONDS fails it."""
    with time_limit(PER_TEST_SECONDS):
        yield


def only_khotui_error(fn, *args, **kw):
    """Call fn; a KhotuiError must carry a message and a fix. Returns the result or None."""
    try:
        return fn(*args, **kw)
    except KhotuiError as exc:
        assert exc.message and exc.fix, repr(exc)
        return None


# ---- /proc/iomem --------------------------------------------------------------------------

hexnum = st.integers(0, 2**64 - 1).map(lambda n: f"{n:x}")
iomem_line = st.tuples(st.integers(0, 8), hexnum, hexnum,
                       st.sampled_from(["System RAM", "Reserved", "Kernel code", "PCI Bus 0000:00",
                                        "System RAM (kmem)", "", " : x", "ACPI\tTables"])
                       ).map(lambda t: f"{' ' * t[0]}{t[1]}-{t[2]} : {t[3]}")
iomem_text = st.one_of(
    st.lists(iomem_line, max_size=40).map("\n".join),
    st.text(max_size=400),
    st.lists(st.one_of(iomem_line, st.text(max_size=30)), max_size=20).map("\n".join),
)


@HOSTILE
@given(iomem_text)
def test_parse_iomem(text):
    iomem = only_khotui_error(parse_iomem, text, path="/proc/iomem")
    if iomem is None:
        return
    json.dumps(iomem.as_dict())
    ram = iomem.system_ram()
    assert ram == sorted(ram)
    for r in iomem.flat[:5]:
        assert iomem.containing(r.start)[-1].start <= r.start
    if iomem.all_zero:
        assert all(r.start == 0 and r.end == 0 for r in iomem.flat)


@pytest.mark.parametrize("seed", [k for k in SEEDS if k.startswith("iomem")])
def test_parse_iomem_mutated_captures(seed):
    data = SEEDS[seed]

    @HOSTILE
    @given(mutations(data))
    def run(edits):
        text = mutate(data, edits).decode("utf-8", errors="replace")
        only_khotui_error(parse_iomem, text, path="/proc/iomem")

    run()


# ---- KHO scratch_phys / scratch_len ------------------------------------------------------

scratch_text = st.one_of(
    st.lists(st.one_of(st.integers(0, 2**80).map(hex), st.text(max_size=12)),
             max_size=10).map("\n".join),
    st.text(max_size=200),
)


@HOSTILE
@given(scratch_text)
def test_parse_scratch_lines(text):
    values = only_khotui_error(parse_scratch_lines, text, path="scratch_phys")
    if values is not None:
        assert all(isinstance(v, int) and v >= 0 for v in values)


@HOSTILE
@given(scratch_text, scratch_text)
def test_read_scratch_pairs(tmp_path_factory, phys, length):
    """read_scratch() (both files, their pairing, nodes, and the new overlap/RAM checks)."""
    from khotui.host.kho import read_scratch
    from khotui.host.sysroot import Sysroot
    root = tmp_path_factory.mktemp("scratch")
    out = root / "sys/kernel/debug/kho/out"
    out.mkdir(parents=True)
    (out / "scratch_phys").write_text(phys)
    (out / "scratch_len").write_text(length)
    result = only_khotui_error(read_scratch, Sysroot(root))
    if result is not None:
        _regions, notes = result
        assert all(isinstance(n, str) for n in notes)


# ---- kernel images and initrds -------------------------------------------------------------

def _inspect_all_ways(data: bytes, tmp_path_factory=None):
    """inspect_kernel and inspect_initrd on BytesIO (and on a real file when given a factory)."""
    results = []
    for fn in (inspect_kernel, inspect_initrd):
        r = only_khotui_error(fn, io.BytesIO(data), name="fuzz-image")
        if r is not None:
            json.dumps(r.as_dict())
            if fn is inspect_kernel:
                for arch in ("x86_64", "arm64", "riscv64"):
                    r.loadable_on(arch)
        results.append(r)
    if tmp_path_factory is not None:
        path = tmp_path_factory.mktemp("img") / "vmlinuz"
        path.write_bytes(data)
        for fn, r in zip((inspect_kernel, inspect_initrd), results, strict=True):
            r2 = only_khotui_error(fn, str(path), name="fuzz-image")
            # the file and the in-memory reader must agree
            assert (r is None) == (r2 is None)
            if r is not None:
                assert r.as_dict() == r2.as_dict()
    return results


@HOSTILE
@given(st.binary(max_size=2048))
def test_inspect_random_bytes(data):
    _inspect_all_ways(data)


@HOSTILE
@given(st.sampled_from([b"MZ", b"\x7fELF", b"\x1f\x8b\x08", b"\xfd7zXZ\x00", b"BZh9",
                        b"\x5d\x00\x00", b"070701", b"070707", b"\x28\xb5\x2f\xfd",
                        b"MZ\0\0zimg"]),
       st.binary(max_size=1024))
def test_inspect_behind_a_magic(magic, rest):
    _inspect_all_ways(magic + rest)


@pytest.mark.parametrize("seed", [k for k in SEEDS if k in ("bzImage", "arm64-Image")])
def test_inspect_mutated_real_kernels(seed, tmp_path_factory):
    data = SEEDS[seed][:0x2000]

    @settings(HOSTILE, max_examples=120)
    @given(mutations(data, words_le=True))
    def run(edits):
        _inspect_all_ways(mutate(data, edits), tmp_path_factory)

    run()


@st.composite
def pe_images(draw):
    """An MZ/PE file with a random section table (what UKIs and zboot images look like)."""
    nsec = draw(st.integers(0, 0xFFFF))
    e_lfanew = draw(st.sampled_from([0x40, 0x80, 0xFFFFFFF0, draw(st.integers(0, 0x200))]))
    opt = draw(st.integers(0, 0xFFFF))
    machine = draw(st.sampled_from([0x8664, 0xAA64, 0x14C, 0]))
    head = bytearray(0x200)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, e_lfanew)
    if e_lfanew + 24 <= len(head):
        head[e_lfanew:e_lfanew + 4] = b"PE\0\0"
        struct.pack_into("<HH", head, e_lfanew + 4, machine, nsec)
        struct.pack_into("<H", head, e_lfanew + 20, opt)
    sections = b""
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from([b".linux", b".uname", b".initrd", b".text", b"\xff\xfe"]))
        sections += name.ljust(8, b"\0")[:8] + struct.pack(
            "<IIII", draw(st.integers(0, 2**32 - 1)), 0, draw(st.integers(0, 2**32 - 1)),
            draw(st.integers(0, 2**32 - 1))) + bytes(16)
    return bytes(head) + sections + draw(st.binary(max_size=256))


@HOSTILE
@given(pe_images())
def test_inspect_pe_images(data):
    _inspect_all_ways(data)


@HOSTILE
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                          st.sampled_from([b"TRAILER!!!\0", b"init\0", b"\0"])), max_size=5),
       st.binary(max_size=64))
def test_inspect_initrd_cpio_chains(entries, tail):
    data = b""
    for filesize, namesize, name in entries:
        data += (b"070701" + b"0" * 48 + f"{filesize:08x}".encode() + b"0" * 32
                 + f"{namesize:08x}".encode() + b"0" * 8 + name)
        data += b"\0" * (-len(data) % 4)
    _inspect_all_ways(data + tail)


# ---- kernel log --------------------------------------------------------------------------

log_line = st.sampled_from([
    "kexec_file: kernel: 00000000deadbeef kernel_size: {n}",
    "kexec_file: segment[{i}]: buf=0x0000 bufsz=0x{h} mem=0x{h} memsz=0x{h}",
    "kexec_file: nr_segments = {i}",
    "kexec_file: kexec_file_load: type:{i}, start:0x{h} head:0x{h} flags:0x{h}",
    "kexec-bzImage64: Loaded purgatory at 0x{h}",
    "kexec-bzImage64: Loaded 64bit kernel at 0x{h} bufsz=0x{h} memsz=0x{h}",
    "kexec-bzImage64: Final command line is: {t}",
    "kexec_file(Image): Loaded kernel at 0x{h} bufsz=0x{h} memsz=0x{h}",
    "6,1234,5678,-;kexec_file: nr_segments = {i}",
    " SUBSYSTEM={t}",
    "{t}",
])
log_number = st.one_of(st.integers(0, 2**70).map(str), st.sampled_from(["0123", "٣", "²", "0x",
                                                                         "9" * 5000]))


@st.composite
def kernel_logs(draw):
    lines = []
    for template in draw(st.lists(log_line, max_size=30)):
        lines.append(template.format(
            n=draw(st.one_of(log_number, st.integers(0, 2**64).map(hex))),
            i=draw(log_number), h=draw(st.one_of(st.integers(0, 2**70).map(lambda v: f"{v:x}"),
                                                 st.sampled_from(["", "g", "F" * 3000]))),
            t=draw(st.text(max_size=40))))
    return "\n".join(lines)


@HOSTILE
@given(st.one_of(kernel_logs(), st.text(max_size=500)))
def test_parse_kernel_log(text):
    loads = only_khotui_error(parse_kernel_log_all, text)
    if loads is not None:
        for load in loads:
            json.dumps(load.as_dict())
    only_khotui_error(parse_kernel_log, text)
    only_khotui_error(learn_purgatory, text)


@pytest.mark.parametrize("seed", [k for k in SEEDS if k.startswith("kernel.log")])
def test_parse_kernel_log_mutated_captures(seed):
    data = SEEDS[seed]

    @settings(HOSTILE, max_examples=60)
    @given(mutations(data))
    def run(edits):
        only_khotui_error(parse_kernel_log_all, mutate(data, edits).decode("utf-8", "replace"))

    run()


# ---- command line ------------------------------------------------------------------------

cmdline_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(["kho=on", "kho=off", "BOOT_IMAGE=/vmlinuz", "initrd=/x",
                              'a="b c"', '"', "--", "ro", "kho", " ", "\t", "\u2028", "x=y=z"]),
             max_size=20).map(" ".join),
)


@HOSTILE
@given(cmdline_text, st.one_of(st.none(), cmdline_text))
def test_cmdline_editor(current, append):
    tokens = split_cmdline(current)
    assert all(t and not t.isspace() for t in tokens)
    new = next_cmdline(current, append)
    appended = split_cmdline(append or "")
    # BOOT_IMAGE= and initrd= of this boot are dropped; only the operator can add them back
    assert all(t in appended for t in split_cmdline(new)
               if t.split("=", 1)[0] in ("BOOT_IMAGE", "initrd"))
    # applying the rule twice with nothing to append changes nothing more
    assert next_cmdline(new) == next_cmdline(next_cmdline(new))
    diff = diff_cmdline(current, new)
    json.dumps(diff.as_dict())
    assert set(diff.added) <= set(split_cmdline(new))
    cmdline_tokens(current)
    kstrtobool(cmdline_param(current, "kho"))


# ---- config, meminfo, BLS entries, node lists, versions ----------------------------------

@HOSTILE
@given(st.one_of(st.text(max_size=400),
                 st.lists(st.tuples(st.sampled_from(["CONFIG_A", "CONFIG_", "# CONFIG_B", ""]),
                                    st.sampled_from(["=", "", "=="]),
                                    st.text(max_size=10)), max_size=20)
                 .map(lambda rows: "\n".join("".join(r) for r in rows))))
def test_parse_config(text):
    cfg = parse_config(text)
    assert all(k.startswith("CONFIG_") for k in cfg)


@HOSTILE
@given(st.one_of(st.text(max_size=400),
                 st.lists(st.tuples(st.sampled_from(["MemTotal", "CmaTotal", "", "X y"]),
                                    st.sampled_from([":", "", "::"]),
                                    st.one_of(st.text(max_size=8), log_number),
                                    st.sampled_from([" kB", "", " MB"])), max_size=20)
                 .map(lambda rows: "\n".join(f"{a}{b} {c}{d}" for a, b, c, d in rows))))
def test_parse_meminfo(text):
    info = parse_meminfo(text)
    assert all(isinstance(v, int) and v >= 0 for v in info.values())


@HOSTILE
@given(st.text(max_size=400))
def test_parse_bls_entry(text):
    fields = parse_bls_entry(text)
    assert all(isinstance(v, list) for v in fields.values())
    for values in fields.values():
        for v in values:
            version_key(v)


@HOSTILE
@given(st.one_of(st.text(alphabet="0123456789,- \n²", max_size=40), st.text(max_size=40),
                 st.tuples(st.integers(0, 2**40), st.integers(0, 2**40))
                 .map(lambda t: f"{t[0]}-{t[1]}")))
def test_parse_list(text):
    ids = only_khotui_error(parse_list, text, path="/sys/devices/system/node/has_memory")
    if ids is not None:
        assert ids == sorted(set(ids))


# ---- the KHO FDT and sub-blob decoders (beyond tests/test_fdt_fuzz.py) -------------------

@HOSTILE
@given(st.sampled_from(["LUO", "memblock", "kexec-metadata", "kho_test", "", "../x", "\0"]),
       st.one_of(st.binary(max_size=300),
                 st.sampled_from([k for k in SEEDS if k.startswith("sub:")]).map(SEEDS.get)
                 .flatmap(lambda seed: mutations(seed).map(lambda e: mutate(seed, e)))))
def test_sub_blob_names_and_cross_check(name, data):
    from khotui.fdt import decode_kho_fdt, decode_sub_blob
    from khotui.fdt.kho import cross_check_sub_blobs
    blob = decode_sub_blob(name, data)
    json.dumps(blob.as_dict())
    kho = decode_kho_fdt(SEEDS["fdt:two-nodes/out"], "out/fdt")
    cross_check_sub_blobs(kho, {name: len(data)})


# ---- huge claimed sizes must not be allocated ----------------------------------------------

def _be32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _huge_fdt(field: int | None) -> bytes:
    """A small FDT whose header field `field` (or, with None, a property length) says 4 GiB."""
    hdr = [0xD00DFEED, 0x100, 0x38, 0x60, 0x28, 17, 16, 0, 0x10, 0x28]
    if field is not None:
        hdr[field] = 0xFFFFFFF0
    body = _be32(1, 0, 3, 0xFFFFFFF0, 0) + b"\0" * 0x80
    return _be32(*hdr) + body


def _bzimage_claiming(**fields) -> bytes:
    data = bytearray(SEEDS["bzImage"][:0x1000])
    offsets = {"syssize": (0x1F4, "<I"), "init_size": (0x260, "<I"), "setup_sects": (0x1F1, "<B"),
               "kernel_version_offset": (0x20E, "<H"), "cmdline_size": (0x238, "<I")}
    for name, value in fields.items():
        off, fmt = offsets[name]
        struct.pack_into(fmt, data, off, value)
    return bytes(data)


def _zboot_claiming() -> bytes:
    data = bytearray(0x100)
    data[:2], data[4:8] = b"MZ", b"zimg"
    struct.pack_into("<II", data, 8, 0x40, 0xFFFFFFFF)
    data[0x18:0x1C] = b"gzip"
    return bytes(data)


def _arm64_claiming() -> bytes:
    data = bytearray(SEEDS["arm64-Image"][:0x1000])
    struct.pack_into("<Q", data, 0x10, 0xFFFFFFFFFFFFF000)   # image_size
    return bytes(data)


def _cpio_claiming() -> bytes:
    return (b"070701" + b"0" * 48 + b"FFFFFFFF" + b"0" * 32 + b"FFFFFFFF" + b"0" * 8
            + b"TRAILER!!!\0")


def _metadata_claiming() -> bytes:
    return struct.pack("<I", 1) + b"7.3.4".ljust(65, b"\0") + struct.pack("<I", 0xFFFFFFFF)


HUGE_CLAIMS = {
    "fdt totalsize 4 GiB": lambda: _huge_fdt(1),
    "fdt off_dt_struct 4 GiB": lambda: _huge_fdt(2),
    "fdt size_dt_struct 4 GiB": lambda: _huge_fdt(9),
    "fdt size_dt_strings 4 GiB": lambda: _huge_fdt(8),
    "fdt prop len 4 GiB": lambda: _huge_fdt(None),
    "bzImage syssize/init_size 4 GiB": lambda: _bzimage_claiming(syssize=0xFFFFFFFF,
                                                                 init_size=0xFFFFFFFF),
    "bzImage 255 setup sectors, version far out": lambda: _bzimage_claiming(
        setup_sects=255, kernel_version_offset=0xFFFF),
    "PE 65535 sections": lambda: _pe_many_sections(),
    "zboot payload 4 GiB": _zboot_claiming,
    "arm64 image_size 2^64": _arm64_claiming,
    "cpio entry 4 GiB": _cpio_claiming,
    "kexec-metadata count 2^32": _metadata_claiming,
    "lzma dictionary 4 GiB": lambda: b"\x5d\x00\x00\xff\xff" + b"\xff" * 8 + b"\0" * 64,
}


def _pe_many_sections() -> bytes:
    head = bytearray(0x200)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x40)
    head[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<HH", head, 0x44, 0x8664, 0xFFFF)
    struct.pack_into("<H", head, 0x54, 0xFFFF)
    sec = b".linux\0\0" + struct.pack("<IIII", 0xFFFFFFFF, 0, 0xFFFFFFFF, 0xFFFFFFF0) + bytes(16)
    return bytes(head) + sec * 200


@pytest.mark.parametrize("claim", sorted(HUGE_CLAIMS))
def test_huge_claims_are_not_allocated(claim, shared):
    from khotui.fdt import decode_kho_fdt, decode_sub_blob
    data = HUGE_CLAIMS[claim]()
    tracemalloc.start()
    try:
        if claim.startswith("fdt"):
            only_khotui_error(decode_kho_fdt, data, "out/fdt")
        elif claim.startswith("kexec-metadata"):
            decode_sub_blob("kexec-metadata", data)
        else:
            _inspect_all_ways(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{claim}: peak {peak} bytes"



# ---- a snapshot's memory block record ----------------------------------------------------

def _record_runs():
    from khotui.host.blockrecord import BlockRun
    value = st.one_of(st.none(), st.sampled_from(["online\n", "offline\n", "1\n", "0\n", "",
                                                  "DMA32 Normal\n", "\u00e9\n"]))
    run = st.tuples(st.integers(1, 1 << 12), st.integers(0, 1 << 12),
                    st.lists(st.integers(0, 1023), max_size=3, unique=True).map(sorted),
                    st.lists(st.integers(0, 1023), max_size=3, unique=True).map(sorted),
                    st.one_of(st.none(), st.tuples(*[value] * 5)))

    def build(parts):
        runs, first = [], 0
        for count, gap, nodes, links, values in parts:
            first += gap
            runs.append(BlockRun(first, count, tuple(nodes), tuple(links), values))
            first += count
        return runs
    return st.lists(run, max_size=12).map(build)


@given(_record_runs())
def test_block_record_round_trips(runs):
    from khotui.host.blockrecord import format_record, parse_record
    from khotui.host.memory import BLOCK_READ
    data = format_record(runs, BLOCK_READ)
    assert parse_record(io.BytesIO(data), "khotui-blocks.jsonl", BLOCK_READ, 1 << 27) == runs


@given(_record_runs(), st.data())
def test_block_record_cut_or_mutated_is_a_clear_error(runs, data):
    from khotui.host.blockrecord import format_record, parse_record
    from khotui.host.memory import BLOCK_READ
    raw = bytearray(format_record(runs, BLOCK_READ))
    how = data.draw(st.sampled_from(["cut", "flip", "insert"]))
    at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
    if how == "cut":
        raw = raw[:at]
    elif how == "flip" and raw:
        raw[at] = data.draw(st.integers(0, 255))
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    got = only_khotui_error(parse_record, io.BytesIO(bytes(raw)), "khotui-blocks.jsonl",
                            BLOCK_READ, 1 << 27)
    if got is not None:                     # what parses is bounded and ordered
        assert sum(r.count for r in got) <= 1 << 22
        assert all(a.first + a.count <= b.first for a, b in itertools.pairwise(got))
