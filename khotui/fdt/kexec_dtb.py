"""The arm64 DTB segment's size: the running FDT as of_kexec_alloc_and_setup_fdt() rewrites it.

The kernel builds the DTB segment of an arm64 `kexec_file_load` from its own flattened device
tree (`/sys/firmware/fdt`) with `/chosen` rewritten (drivers/of/kexec.c) and packed by
fdt_pack(): `kexec_dtb_size()` follows libfdt's size arithmetic step by step, as sizes only.
The header is read by `reader.parse_header()`; this module owns only the libfdt resize model.
Returns a `khotui.types.DtbSize` for the placement (which may not import fdt), or raises
`DtbError` where the kernel would fail ("Preparing for new dtb failed").
"""

from __future__ import annotations

import struct

from khotui.errors import KhotuiError
from khotui.fdt.reader import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_NOP,
    FDT_PROP,
    HEADER_SIZE_V17,
    RSVMAP_ENTRY_SIZE,
    parse_header,
)
from khotui.types import DtbSize

ULONG_MAX = (1 << 64) - 1
PAGE_SIZE = 4096                 # the default; the running kernel's comes in as page_size

# drivers/of/kexec.c
FDT_EXTRA_SPACE = 0x1000
RNG_SEED_SIZE = 128


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


# libfdt: fdt.h / libfdt_internal.h (the token values and header layout are reader.py's)
FDT_HEADER_SIZE = HEADER_SIZE_V17    # FDT_ALIGN(sizeof(struct fdt_header), 8)
FDT_RSV_ENTRY = RSVMAP_ENTRY_SIZE
FDT_PROP_HEADER = 12                 # struct fdt_property: tag, len, nameoff
FDT_MAX_NCELLS = 4


def _tagalign(n: int) -> int:
    return (n + 3) & ~3


class DtbError(Exception):
    """The device tree cannot be rewritten as of_kexec_alloc_and_setup_fdt() would."""


# --------------------------------------------------------------------------------------------
# The DTB segment: of_kexec_alloc_and_setup_fdt() + fdt_pack(), as sizes only


class _FdtModel:
    """Just enough of a flattened device tree to follow libfdt's size arithmetic."""

    def __init__(self, blob: bytes, bufsize: int) -> None:
        try:
            header = parse_header(blob, "/sys/firmware/fdt")
        except KhotuiError as exc:
            raise DtbError(exc.message) from None
        if header.version < 17 or header.size_dt_struct is None:
            raise DtbError(f"FDT version {header.version}: the kernel's libfdt wants 17")
        totalsize, off_struct, off_strings, off_rsv = (header.totalsize, header.off_dt_struct,
                                                       header.off_dt_strings,
                                                       header.off_mem_rsvmap)
        size_strings, size_struct = header.size_dt_strings, header.size_dt_struct
        if totalsize > len(blob):
            raise DtbError(f"truncated: header says {totalsize} bytes, file has {len(blob)}")
        self.boot_totalsize = totalsize
        self.rsv: list[tuple[int, int]] = []
        offset = off_rsv
        while True:
            if offset + FDT_RSV_ENTRY > totalsize:
                raise DtbError("memory reservation block runs past the end")
            address, size = struct.unpack_from(">QQ", blob, offset)
            offset += FDT_RSV_ENTRY
            if address == 0 and size == 0:
                break
            self.rsv.append((address, size))
        self.struct_size = size_struct
        self.strings = bytes(blob[off_strings:off_strings + size_strings])
        self.bufsize = bufsize
        rsv_size = (len(self.rsv) + 1) * FDT_RSV_ENTRY
        misordered = (off_rsv < FDT_HEADER_SIZE or off_struct < off_rsv + rsv_size
                      or off_strings < off_struct + size_struct)
        # mirrors fdt_open_into(), scripts/dtc/libfdt/fdt_rw.c: moved as is when the blocks are
        # in order (gaps kept until fdt_pack), else repacked in order
        if misordered:
            self.gaps = 0
        else:
            self.gaps = off_strings - (FDT_HEADER_SIZE + rsv_size + size_struct)
        if self.data_size > bufsize:
            raise DtbError("FDT_ERR_NOSPACE in fdt_open_into()")
        try:
            root, chosen = self._scan(blob, off_struct, size_struct, off_strings, size_strings)
        except (ValueError, struct.error) as exc:   # an unterminated name, a cut token
            raise DtbError(f"the structure block cannot be walked: {exc}") from None
        self.root_props = root
        self.has_chosen = chosen is not None       # no /chosen: kexec_dtb_size() adds one
        self.chosen_props: dict[str, bytes] = chosen or {}

    @property
    def data_size(self) -> int:
        """fdt_data_size_(): off_dt_strings + size_dt_strings."""
        return (FDT_HEADER_SIZE + self.gaps + (len(self.rsv) + 1) * FDT_RSV_ENTRY
                + self.struct_size + len(self.strings))

    @property
    def packed_size(self) -> int:
        """fdt_pack(): header, reserve map, struct and strings blocks, no gaps."""
        return (FDT_HEADER_SIZE + (len(self.rsv) + 1) * FDT_RSV_ENTRY + self.struct_size
                + len(self.strings))

    def _scan(self, blob: bytes, off: int, size: int, off_strings: int,
              size_strings: int) -> tuple[dict[str, bytes], dict[str, bytes] | None]:
        root: dict[str, bytes] = {}
        chosen: dict[str, bytes] | None = None
        depth = 0
        in_chosen = False
        pos, end = off, off + size
        while pos + 4 <= end:
            (tag,) = struct.unpack_from(">I", blob, pos)
            pos += 4
            if tag == FDT_BEGIN_NODE:
                name_end = blob.index(b"\0", pos)
                name = blob[pos:name_end].decode("ascii", "replace")
                pos = off + _tagalign(name_end + 1 - off)
                depth += 1
                # fdt_path_offset("/chosen"): the first root sub-node "chosen" or "chosen@..."
                if depth == 2 and chosen is None and (name == "chosen"
                                                      or name.startswith("chosen@")):
                    chosen, in_chosen = {}, True
            elif tag == FDT_END_NODE:
                if in_chosen and depth == 2:
                    in_chosen = False
                depth -= 1
            elif tag == FDT_PROP:
                length, nameoff = struct.unpack_from(">II", blob, pos)
                pos += 8
                name_end = blob.index(b"\0", off_strings + nameoff)
                name = blob[off_strings + nameoff:name_end].decode("ascii", "replace")
                value = bytes(blob[pos:pos + length])
                pos = off + _tagalign(pos + length - off)
                if depth == 1:
                    root.setdefault(name, value)
                elif in_chosen and depth == 2 and chosen is not None:   # in_chosen: chosen is set
                    chosen.setdefault(name, value)
            elif tag == FDT_NOP:
                continue
            elif tag == FDT_END:
                break
            else:
                raise DtbError(f"bad FDT tag 0x{tag:x} in the structure block")
        return root, chosen

    def _check(self, what: str) -> None:
        # fdt_splice_(): -FDT_ERR_NOSPACE when the data outgrows the buffer
        if self.data_size > self.bufsize:
            raise DtbError(f"FDT_ERR_NOSPACE while {what}: the buffer of_kexec_alloc_and_setup_fdt()"
                           f" allocates ({self.bufsize} bytes) is too small")

    def cells(self, name: str, default: int) -> int:
        """fdt_address_cells() / fdt_size_cells() of the root node."""
        value = self.root_props.get(name)
        if value is None:
            return default
        if len(value) != 4:
            raise DtbError(f"root {name} is {len(value)} bytes, not one cell")
        cells = int.from_bytes(value, "big")
        if cells > FDT_MAX_NCELLS or (name == "#address-cells" and cells == 0):
            raise DtbError(f"root {name} = {cells}")
        return cells

    def _add_string(self, name: str) -> int:
        # mirrors fdt_find_add_string_(): any "name\0" in the table will do, even a suffix
        key = name.encode() + b"\0"
        if self.strings.find(key) >= 0:
            return 0
        self.strings += key
        self._check(f"adding the string {name!r}")
        return len(key)

    def delprop(self, name: str) -> int:
        # mirrors fdt_delprop(): the property goes, its name stays in the strings block
        value = self.chosen_props.pop(name, None)
        if value is None:
            return 0
        delta = FDT_PROP_HEADER + _tagalign(len(value))
        self.struct_size -= delta
        return -delta

    def setprop(self, name: str, length: int) -> int:
        # mirrors fdt_setprop_placeholder(): resize in place, else add
        old = self.chosen_props.get(name)
        added = 0
        if old is not None:
            delta = _tagalign(length) - _tagalign(len(old))
        else:
            added = self._add_string(name)
            delta = FDT_PROP_HEADER + _tagalign(length)
        self.chosen_props[name] = bytes(length)
        self.struct_size += delta
        self._check(f"setting {name}")
        return delta + added

    def appendprop(self, name: str, length: int) -> int:
        # mirrors fdt_appendprop(): grow an existing property, else add it
        old = self.chosen_props.get(name)
        if old is None:
            return self.setprop(name, length)
        delta = _tagalign(len(old) + length) - _tagalign(len(old))
        self.chosen_props[name] = bytes(len(old) + length)
        self.struct_size += delta
        self._check(f"appending to {name}")
        return delta

    def addrrange_len(self) -> int:
        # fdt_appendprop_addrrange(fdt, 0, ...): root cells, only 1 or 2 are accepted
        addr_cells = self.cells("#address-cells", 2)
        size_cells = self.cells("#size-cells", 1)
        if addr_cells not in (1, 2) or size_cells not in (1, 2):
            raise DtbError(f"root #address-cells {addr_cells} / #size-cells {size_cells}: "
                           "fdt_appendprop_addrrange() handles only 1 or 2")
        return 4 * (addr_cells + size_cells)

    def del_mem_rsv(self, address: int, size: int) -> bool:
        # mirrors fdt_find_and_del_mem_rsv(), drivers/of/kexec.c
        try:
            self.rsv.remove((address, size))
        except ValueError:
            return False
        return True

    def add_mem_rsv(self, address: int, size: int) -> None:
        self.rsv.append((address, size))
        self._check("adding a memory reservation")


def _read_number(value: bytes) -> int:
    """of_read_number(prop, len / 4): big-endian cells, the low two kept."""
    cells = struct.unpack(f">{len(value) // 4}I", value[:len(value) // 4 * 4])
    number = 0
    for cell in cells:
        number = ((number << 32) | cell) & ULONG_MAX
    return number


def kexec_dtb_size(fdt: bytes, *, cmdline: bytes | None, initrd: bool, kho: bool,
                   kexec_handover: bool = True, rng_initialized: bool = True,
                   ima_buffer: bool = False, page_size: int = PAGE_SIZE) -> DtbSize:
    """Size of the DTB segment built from the running kernel's FDT, step by step.

    Mirrors of_kexec_alloc_and_setup_fdt() (drivers/of/kexec.c) then fdt_pack()
    (scripts/dtc/libfdt/fdt_rw.c), for a normal (not crash) image. `cmdline` is the command
    line without its NUL, None when none is passed (cmdline_len 0). `kho`: the image carries
    KHO data (KHO on); `kexec_handover`: CONFIG_KEXEC_HANDOVER (kho_add_chosen() compiled in).
    Raises DtbError when the kernel would fail ("Preparing for new dtb failed").
    """
    boot_totalsize = struct.unpack_from(">I", fdt, 4)[0] if len(fdt) >= 8 else 0
    cmdline_len = 0 if cmdline is None else len(cmdline.split(b"\0", 1)[0])
    model = _FdtModel(fdt, boot_totalsize + cmdline_len + FDT_EXTRA_SPACE)
    out = DtbSize(totalsize=0, boot_totalsize=model.boot_totalsize)
    steps, assumptions = out.steps, out.assumptions

    def step(text: str, delta: int) -> None:
        if delta:
            steps.append(f"{text}: {delta:+d} bytes")

    # Remove memory reservation for the current device tree (its address is not visible to
    # user space: take an entry of exactly its size to be it)
    own = [r for r in model.rsv if r[1] == model.boot_totalsize]
    if own:
        model.del_mem_rsv(*own[0])
        step("reserve map: the boot FDT's own entry removed", -FDT_RSV_ENTRY)
        assumptions.append("the reserve-map entry of the FDT's own size "
                           f"(0x{own[0][0]:x}+0x{own[0][1]:x}) is taken to be the FDT itself")

    if not model.has_chosen:
        model.has_chosen = True
        # fdt_add_subnode(): FDT_BEGIN_NODE, "chosen\0" padded to 8, FDT_END_NODE
        model.struct_size += 4 + _tagalign(len("chosen") + 1) + 4
        model._check("adding /chosen")
        step("/chosen added", 4 + _tagalign(len("chosen") + 1) + 4)

    step("linux,elfcorehdr removed", model.delprop("linux,elfcorehdr"))
    step("linux,usable-memory-range removed", model.delprop("linux,usable-memory-range"))

    start = model.chosen_props.get("linux,initrd-start")
    if start is not None:
        end = model.chosen_props.get("linux,initrd-end")
        if end is None:
            raise DtbError("/chosen has linux,initrd-start but no linux,initrd-end")
        tmp_start, tmp_end = _read_number(start), _read_number(end)
        tmp_size = tmp_end - tmp_start
        if (model.del_mem_rsv(tmp_start, tmp_size)
                # "firmware may reserve a multiple of PAGE_SIZE": the running kernel's
                or model.del_mem_rsv(tmp_start, _align_up(tmp_size, page_size))):
            step("reserve map: the boot initrd's entry removed", -FDT_RSV_ENTRY)

    if initrd:
        step("linux,initrd-start set (u64)", model.setprop("linux,initrd-start", 8))
        step("linux,initrd-end set (u64)", model.setprop("linux,initrd-end", 8))
        model.add_mem_rsv(0, 0)
        step("reserve map: the new initrd added", FDT_RSV_ENTRY)
    else:
        step("linux,initrd-start removed", model.delprop("linux,initrd-start"))
        step("linux,initrd-end removed", model.delprop("linux,initrd-end"))

    if kexec_handover:
        # mirrors kho_add_chosen(), drivers/of/kexec.c
        step("linux,kho-fdt removed", model.delprop("linux,kho-fdt"))
        step("linux,kho-scratch removed", model.delprop("linux,kho-scratch"))
        if kho:
            cells = model.addrrange_len()
            if cells == 8:
                out.notes.append("root #address-cells = 1: the KHO FDT page and the scratch "
                                   "array must lie below 4 GiB or the DTB cannot be built")
            step("linux,kho-fdt added", model.appendprop("linux,kho-fdt", cells))
            step("linux,kho-scratch added", model.appendprop("linux,kho-scratch", cells))

    if cmdline is not None:
        step("bootargs set", model.setprop("bootargs", cmdline_len + 1))
    else:
        step("bootargs removed", model.delprop("bootargs"))

    step("kaslr-seed removed", model.delprop("kaslr-seed"))
    if rng_initialized:
        step("kaslr-seed set (u64)", model.setprop("kaslr-seed", 8))
        step("rng-seed set (128 bytes)", model.setprop("rng-seed", RNG_SEED_SIZE))
    else:
        assumptions.append("the RNG is not initialised: no kaslr-seed or rng-seed")
    step("linux,booted-from-kexec set", model.setprop("linux,booted-from-kexec", 0))

    # mirrors remove_ima_buffer(): the old IMA buffer property and its reservation go
    ima = model.chosen_props.get("linux,ima-kexec-buffer")
    if ima is not None:
        step("linux,ima-kexec-buffer removed", model.delprop("linux,ima-kexec-buffer"))
        try:
            addr_cells = model.cells("#address-cells", 2)
            size_cells = model.cells("#size-cells", 1)
            if len(ima) == 4 * (addr_cells + size_cells):
                address = _read_number(ima[:4 * addr_cells])
                size = _read_number(ima[4 * addr_cells:])
                if model.del_mem_rsv(address, size):
                    step("reserve map: the old IMA buffer removed", -FDT_RSV_ENTRY)
        except DtbError:
            pass
    if ima_buffer:
        # mirrors setup_ima_buffer() (CONFIG_IMA_KEXEC)
        step("linux,ima-kexec-buffer added",
             model.appendprop("linux,ima-kexec-buffer", model.addrrange_len()))
        model.add_mem_rsv(0, 0)
        step("reserve map: the IMA buffer added", FDT_RSV_ENTRY)

    out.totalsize = model.packed_size
    gaps = model.gaps
    if gaps:
        steps.append(f"fdt_pack(): {gaps} bytes of free space between blocks dropped")
    return out


