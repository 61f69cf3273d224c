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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

GUARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# what signal.getsignal() returns: a Python handler, SIG_DFL/SIG_IGN, or None (set from C)
Handler = Callable[[int, FrameType | None], object] | int | None


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


class Deferred:
    """SIGINT, SIGTERM and SIGHUP noted, not acted on, while the app's load or unload runs.

    The app runs the syscall in a worker thread, where `terminating()` cannot install
    handlers and `blocked()` masks only that thread: a SIGHUP delivered to the main thread
    (the SSH link dropping while the kernel loads) would still kill the process with the
    attempt audited and the result not. `defer()` is called on the main thread before the
    worker starts; `restore()` after its answer is recorded says which signal came, if any,
    so the app can then leave, saying what happened.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._old: dict[int, Handler] = {}

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)

    def install(self) -> None:
        for sig in GUARDED:
            old = signal.getsignal(sig)
            self._old[sig] = old
            if old is not signal.SIG_IGN:       # an operator's nohup stays in force
                signal.signal(sig, self._note)

    def restore(self) -> int | None:
        """Put the previous handlers back; the first signal that came, or None."""
        for sig, old in self._old.items():
            if old is not None:
                signal.signal(sig, old)
        self._old = {}
        return self.received[0] if self.received else None


def defer() -> Deferred | None:
    """A `Deferred` installed now, or None off the main thread (nothing can be installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    deferred = Deferred()
    deferred.install()
    return deferred
