"""One fuzz target per parser of untrusted input. Each takes bytes and may only return or raise
KhotuiError; anything else is a finding (atheris reports it with the input that caused it)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

from khotui.errors import KhotuiError


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def fdt(data: bytes) -> None:
    from khotui.fdt import decode_kho_fdt, describe_property, to_dts
    try:
        kho = decode_kho_fdt(data, "fuzz/fdt")
    except KhotuiError:
        return
    to_dts(kho.tree)
    json.dumps(kho.as_dict())
    for node in kho.tree.nodes():
        for p in node.properties:
            describe_property(node.path, p, node=node)


def sub_blob(data: bytes) -> None:
    from khotui.fdt import decode_sub_blob, to_dts
    names = ("kexec-metadata", "LUO", "memblock", "kho_test", "other")
    name = names[data[0] % len(names)] if data else "other"
    blob = decode_sub_blob(name, data[1:])
    json.dumps(blob.as_dict())
    if blob.fdt is not None:
        to_dts(blob.fdt)


def iomem(data: bytes) -> None:
    from khotui.host.iomem import parse_iomem
    try:
        m = parse_iomem(_text(data), path="/proc/iomem")
    except KhotuiError:
        return
    json.dumps(m.as_dict())
    m.system_ram()
    for r in m.flat[:8]:
        m.containing(r.start)


def scratch(data: bytes) -> None:
    from khotui.host.kho import parse_scratch_lines
    phys, _, length = _text(data).partition("\n--\n")
    for text in (phys, length):
        with contextlib.suppress(KhotuiError):
            parse_scratch_lines(text, path="scratch_phys")


def kernel(data: bytes) -> None:
    from khotui.image.inspect import inspect_kernel
    try:
        img = inspect_kernel(io.BytesIO(data), name="fuzz/vmlinuz")
    except KhotuiError:
        return
    json.dumps(img.as_dict())
    img.loadable_on("x86_64")
    img.loadable_on("arm64")


def initrd(data: bytes) -> None:
    from khotui.image.inspect import inspect_initrd
    with contextlib.suppress(KhotuiError):
        json.dumps(inspect_initrd(io.BytesIO(data), name="fuzz/initrd").as_dict())


def kernellog(data: bytes) -> None:
    from khotui.host.kernellog import learn_purgatory, parse_kernel_log_all
    loads = parse_kernel_log_all(_text(data))
    for load in loads:
        json.dumps(load.as_dict())
    learn_purgatory(loads)


def cmdline(data: bytes) -> None:
    from khotui.cmdline import diff_cmdline, next_cmdline, split_cmdline
    from khotui.cmdline import kho_requested as _cmdline_has_kho_on
    current, _, append = _text(data).partition("\x00")
    new = next_cmdline(current, append or None)
    diff_cmdline(current, new)
    assert next_cmdline(new) == next_cmdline(next_cmdline(new)), (current, append)
    if append.strip() == "kho=on":
        assert _cmdline_has_kho_on(new) is True, (current, new)
    split_cmdline(current)


def host_text(data: bytes) -> None:
    """config, meminfo, BLS entries, node lists: the small text files of a snapshot."""
    from khotui.host.boot import parse_config, parse_meminfo
    from khotui.host.kernels import parse_bls_entry, version_key
    from khotui.host.memory import parse_list
    text = _text(data)
    parse_config(text)
    parse_meminfo(text)
    for values in parse_bls_entry(text).values():
        for v in values:
            version_key(v)
    with contextlib.suppress(KhotuiError):
        parse_list(text, path="has_memory")


def block_record(data: bytes) -> None:
    """A snapshot's memory block record (khotui.host.blockrecord), then the block model."""
    from khotui.host.blockrecord import parse_record
    from khotui.host.memory import BLOCK_READ
    try:
        runs = parse_record(io.BytesIO(data), "fuzz/khotui-blocks.jsonl", BLOCK_READ, 1 << 27)
    except KhotuiError:
        return
    assert sum(r.count for r in runs) <= 1 << 22, "a record may not expand past MAX_BLOCKS"
    assert all(a.first + a.count <= b.first for a, b in itertools.pairwise(runs)), "runs overlap"


TARGETS = {f.__name__: f for f in (fdt, sub_blob, iomem, scratch, kernel, initrd, kernellog,
                                   cmdline, host_text, block_record)}
