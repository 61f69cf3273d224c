"""Reading a host: the live system under `/`, a snapshot directory, or the bundled demo.

Everything here takes a `Sysroot`: every file is read at its host path below one root, so the
same code reads the live host, a snapshot made by `khotui snapshot`, and the captures in tests.
Owns the readers (KHO debugfs, iomem, NUMA nodes and memory blocks, boot and config, kexec
state, installed kernels, the kernel log), the snapshot writer and the writable-by-others rule.
Imports only the shared base modules and `khotui.fdt`; the only users of pyudev and psutil.
"""

from khotui.host.sysroot import Sysroot

__all__ = ["Sysroot"]
