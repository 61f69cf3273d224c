"""Messages that cross screens; the app handles them and owns the state they carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

from khotui.tui.viewmodel import LoadResult, Plan, PlanInput

if TYPE_CHECKING:
    from khotui.tui.viewmodel import LoadSession


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


class FilesOpened(Message):
    """The kernel and initrd are open and hashed and planned again (a load session): the
    confirmation shows these, the load commits that session, or it is closed unused."""

    def __init__(self, plan: Plan, files: LoadSession, hashes: list[tuple[str, str, int | None]]) -> None:
        super().__init__()
        self.plan = plan
        self.files = files
        self.hashes = hashes
