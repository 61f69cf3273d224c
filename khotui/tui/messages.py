"""Messages that cross screens; the app handles them and owns the state they carry."""

from __future__ import annotations

from typing import Protocol

from textual.message import Message

from khotui.tui.viewmodel import LoadResult, Plan, PlanInput


class PlanRequested(Message):
    """Prepare asks for a dry run of this kernel/initrd/cmdline."""

    def __init__(self, request: PlanInput) -> None:
        super().__init__()
        self.request = request


class PlanReady(Message):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan


class UnloadRequested(Message):
    """The operator asked to unload the loaded kexec image (asks for confirmation first)."""


class LoadFinished(Message):
    def __init__(self, result: LoadResult) -> None:
        super().__init__()
        self.result = result


class OpenFiles(Protocol):
    """The kernel and initrd, open (khotui.load.opened.OpenedFiles): loaded, or closed unused."""

    def close(self) -> None: ...


class FilesOpened(Message):
    """The kernel and initrd are open and hashed: the confirmation shows these, the load uses them."""

    def __init__(self, plan: Plan, files: OpenFiles, hashes: list[tuple[str, str, int | None]]) -> None:
        super().__init__()
        self.plan = plan
        self.files = files
        self.hashes = hashes
