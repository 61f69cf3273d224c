"""Reading a host: the live system under `/`, a snapshot directory, or the bundled demo.

Everything here takes a `Sysroot`: every file is read at its host path below one root, so the
same code reads the live host, a snapshot made by `khotui snapshot`, and the captures in tests.
"""

from khotui.host.sysroot import Sysroot

__all__ = ["Sysroot"]
