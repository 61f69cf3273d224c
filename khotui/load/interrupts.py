"""Interrupts around the one state-changing syscall: blocked across it, reported truthfully after.

An operator's Ctrl-C (SIGINT), a dropped SSH link (SIGHUP) or a `kill` (SIGTERM) may arrive at
any moment. Around `kexec_file_load` that moment matters: a KeyboardInterrupt raised as the
syscall returns would lose the kernel's answer and the audit record of an image that *is*
loaded. So:

- `terminating()` turns SIGTERM and SIGHUP, whose default action kills the process silently
  (signal(7)), into an `Interrupted` exception for the duration of a load or unload, like
  SIGINT already is, so the caller can say what happened and the audit is finished;
- `blocked()` blocks SIGINT, SIGTERM and SIGHUP (pthread_sigmask(2)) from just before the
  "attempt" audit record until the result is audited. A blocked signal stays pending in the
  kernel and is delivered when the mask is restored, i.e. after the record of what the kernel
  did is on disk; the Python handler then raises at the next bytecode.

Both are no-ops off the main thread where Python cannot install handlers (the TUI runs its load
in a worker thread; the mask still applies to that thread).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

GUARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived during a load or unload (`signum` says which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def terminating() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in GUARDED}
    for sig in GUARDED:
        # SIG_IGN stays ignored (nohup, an operator's own choice)
        if old[sig] is not signal.SIG_IGN:
            signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in old.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextmanager
def blocked() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP held pending inside the block, delivered after it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, GUARDED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
