"""The khotui app: five screens (modes), shared load state, help and the command palette.

The app owns the state that crosses screens (the chosen kernel/initrd/cmdline, the last plan,
the last load result); screens read it and post messages; workers never touch widgets.
The data source (`viewmodel.Source`: live host, snapshot or demo, plus the syscall seam) is
given to the constructor, which is how tests inject a fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from khotui.tui import theme as themes
from khotui.tui._hooks import HeldOutputApp
from khotui.tui.messages import (
    FilesOpened,
    LoadFinished,
    PlanReady,
    PlanRequested,
    UnloadRequested,
)
from khotui.tui.viewmodel import LoadResult, Plan, PlanInput, Source

if TYPE_CHECKING:
    from khotui.tui.viewmodel import Deferred, LoadSession, Syscalls

# (mode, key, title) in the order of the navigation bar
SCREENS: list[tuple[str, str, str]] = [
    ("overview", "1", "Overview"),
    ("memory", "2", "Memory map"),
    ("handover", "3", "Handover"),
    ("prepare", "4", "Prepare"),
    ("plan", "5", "Plan"),
]


def _overview() -> Screen[None]:
    from khotui.tui.screens.overview import OverviewScreen
    return OverviewScreen()


def _memory() -> Screen[None]:
    from khotui.tui.screens.memory import MemoryScreen
    return MemoryScreen()


def _handover() -> Screen[None]:
    from khotui.tui.screens.handover import HandoverScreen
    return HandoverScreen()


def _prepare() -> Screen[None]:
    from khotui.tui.screens.prepare import PrepareScreen
    return PrepareScreen()


def _plan() -> Screen[None]:
    from khotui.tui.screens.plan import PlanScreen
    return PlanScreen()


class KhotuiApp(HeldOutputApp[int]):
    """Prepare a kexec with KHO: see, choose, plan, confirm, load.

    Output is held while a screen's data comes in (HeldOutputApp, khotui/tui/_hooks.py);
    `textual_hooks=False` (or KHOTUI_TEXTUAL_HOOKS=0) turns that and the other Textual hooks
    off: the same app, more bytes written."""

    TITLE = "khotui"
    # Every screen's .tcss (beside the screen it styles) is read once, with the app: Textual
    # re-parses all CSS and restyles every node when a screen brings a new CSS_PATH, a 100-300 ms
    # freeze on the first visit of each screen (bench/tui_scale.py).
    CSS_PATH = ["app.tcss", "screens/memory.tcss", "screens/handover.tcss", "screens/prepare.tcss",
                "screens/plan.tcss"]
    MODES = {"overview": _overview, "memory": _memory, "handover": _handover,
             "prepare": _prepare, "plan": _plan}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("1", "goto('overview')", "Overview", id="goto-overview", show=False),
        Binding("2", "goto('memory')", "Memory", id="goto-memory", show=False),
        Binding("3", "goto('handover')", "Handover", id="goto-handover", show=False),
        Binding("4", "goto('prepare')", "Prepare", id="goto-prepare", show=False),
        Binding("5", "goto('plan')", "Plan", id="goto-plan", show=False),
        Binding("f1,question_mark", "help", "Help", id="help", key_display="?"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, source: Source, *, theme: str | None = None,
                 textual_hooks: bool | None = None) -> None:
        super().__init__(textual_hooks=textual_hooks)
        self.source = source
        for t in themes.THEMES:
            self.register_theme(t)
        self.theme = theme or themes.default_theme()
        self.plan_input: PlanInput | None = None
        self.plan: Plan | None = None
        self.result: LoadResult | None = None
        # signals noted while a load/unload worker runs, and which of the two it is
        self._deferred: Deferred | None = None
        self._deferred_action = "load"

    # -- navigation ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.switch_mode("overview")

    def action_goto(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        from khotui.tui.screens.help import HelpScreen
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    # -- the load flow: prepare → plan → confirm → load → result ---------------------------

    @on(PlanRequested)
    def _plan_requested(self, event: PlanRequested) -> None:
        self.plan_input = event.request
        self.plan = None
        self.switch_mode("plan")
        self.run_plan(event.request)

    @work(thread=True, exclusive=True, group="warm", exit_on_error=False)
    def warm_up(self) -> None:
        """Read ahead for the memory map while the operator reads the Overview."""
        self.source.warm()

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def run_plan(self, request: PlanInput) -> None:
        plan = self.source.plan(request)
        self.post_message(PlanReady(plan))

    @on(PlanReady)
    def _plan_ready(self, event: PlanReady) -> None:
        self.plan = event.plan
        from khotui.tui.screens.plan import PlanScreen
        for screen in self._all_screens():
            if isinstance(screen, PlanScreen):
                screen.show_plan(event.plan)

    def action_confirm_load(self) -> None:
        if self.plan is None:
            self.notify("Nothing planned yet: choose a kernel on Prepare (4) first.",
                        severity="warning")
            return
        self.notify("opening and hashing the kernel and initrd…", timeout=2)
        self.open_files(self.plan)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def open_files(self, plan: Plan) -> None:
        from khotui.errors import KhotuiError
        try:
            files, hashes = self.source.open_files(plan)
        except KhotuiError as exc:
            self.post_message(LoadFinished(LoadResult(
                ok=False, dry_run=self.source.dry_run, title="Cannot open the files",
                message=f"{exc.path}: {exc.message}" if exc.path else exc.message, fix=exc.fix)))
            return
        self.post_message(FilesOpened(plan, files, hashes))

    @on(FilesOpened)
    def _files_opened(self, event: FilesOpened) -> None:
        from khotui.tui.screens.confirm import ConfirmLoadScreen
        event.plan.files = event.hashes
        # the "opening and hashing" toast is done with: gone in the dialog's first frame, not
        # redrawn away a second later under the dialog (a full screen over SSH)
        self.clear_notifications()

        def confirmed(ok: bool | str | None) -> None:
            if ok:
                self.start_load(event.plan, event.files, force=ok == "force")
            else:
                event.files.close()
                self.notify("not loaded", timeout=2)

        self.push_screen(ConfirmLoadScreen(event.plan, self.source.hostname(),
                                           dry_run=self.source.dry_run, shown=self.source.shown),
                         confirmed)

    def start_load(self, plan: Plan, files: LoadSession, *, force: bool = False) -> None:
        """Load in a worker, with SIGINT/SIGTERM/SIGHUP deferred on this (the main) thread until
        the kernel's answer is audited: the worker can mask only itself, and a SIGHUP from a
        dropped SSH link would otherwise kill the process between the attempt record and the
        result record."""
        from khotui.tui.viewmodel import defer
        self._deferred, self._deferred_action = defer(), "load"
        self.run_load(plan, files, force=force)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def run_load(self, plan: Plan, files: LoadSession | None = None, force: bool = False) -> None:
        self.post_message(LoadFinished(self.source.load(plan, files, force=force)))

    @on(UnloadRequested)
    def _unload_requested(self, event: UnloadRequested) -> None:
        self.check_unload()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def check_unload(self) -> None:
        """An unusable audit log refuses the unload before the dialog, as `khotui unload`
        does (opening it is file I/O: off the event loop)."""
        from khotui.errors import KhotuiError
        try:
            nothing = self.source.status().kexec.loaded is False
        except KhotuiError:
            nothing = False   # unknown: the dialog and the kernel decide
        if nothing:
            # the palette offers Unload on every screen: say why there is nothing to do
            self.call_from_thread(self.notify, "no kexec image is loaded "
                                  "(/sys/kernel/kexec_loaded is 0): nothing to unload",
                                  severity="warning")
            return
        refusal = self.source.unload_refusal()
        self.call_from_thread(self._ask_unload, refusal)

    def _ask_unload(self, refusal: LoadResult | None) -> None:
        if refusal is not None:
            self.post_message(LoadFinished(refusal))
            return
        from khotui.tui.screens.confirm import ConfirmUnloadScreen

        def confirmed(ok: bool | str | None) -> None:
            if ok:
                from khotui.tui.viewmodel import defer
                self._deferred, self._deferred_action = defer(), "unload"
                self.run_unload()

        self.push_screen(ConfirmUnloadScreen(self.source.hostname(), dry_run=self.source.dry_run),
                         confirmed)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def run_unload(self) -> None:
        self.post_message(LoadFinished(self.source.unload()))

    @on(LoadFinished)
    def _load_finished(self, event: LoadFinished) -> None:
        self.result = event.result
        deferred, self._deferred = self._deferred, None
        signum = None if deferred is None else deferred.restore()
        if signum is not None:
            # the answer is audited; the operator (or their dropped link) asked to stop
            import signal
            r = event.result
            name = signal.Signals(signum).name
            self.exit(return_code=130,
                      message=f"khotui: interrupted ({name}) during the {self._deferred_action}, "
                              f"which was let finish and was audited: {r.title}: {r.message}")
            return
        from khotui.tui.screens.result import ResultScreen
        self.push_screen(ResultScreen(event.result))

    def _all_screens(self) -> Iterable[Screen[Any]]:
        seen: set[int] = set()
        for mode in self.MODES:
            try:
                stack = self.get_screen_stack(mode)
            except KeyError:        # a mode not visited yet has no screens
                continue
            for screen in stack:
                if id(screen) not in seen:
                    seen.add(id(screen))
                    yield screen

    # -- command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for mode, key, title in SCREENS:
            yield SystemCommand(f"Go to {title}", f"Show the {title} screen (key {key})",
                                lambda m=mode: self.action_goto(m))
        yield SystemCommand("Help", "Keys and help for this screen (? or F1)", self.action_help)
        yield SystemCommand("Refresh", "Read the host state again (r)",
                            lambda: self._screen_action("refresh"))
        yield SystemCommand("Plan the load", "Dry run: predict where each segment goes (p on Prepare)",
                            lambda: self._screen_action("plan", fallback="prepare"))
        yield SystemCommand("Load…", "Confirm and load the planned kernel (l on Plan)"
                            + (" — dry run only here" if self.source.dry_run else ""),
                            self.action_confirm_load)
        yield SystemCommand("Unload…", "Unload the loaded kexec image (u on Overview)",
                            lambda: self.post_message(UnloadRequested()))
        yield SystemCommand("Pick a kernel or initrd file…", "Browse for any file (o on Prepare)",
                            lambda: self._screen_action("browse", fallback="prepare"))
        yield SystemCommand("Edit the command line", "Focus the next kernel's command line (e)",
                            lambda: self._screen_action("edit_cmdline", fallback="prepare"))
        yield SystemCommand("Memory map: search /proc/iomem", "Find a range by name or address (/)",
                            lambda: self._screen_action("search", fallback="memory"))
        yield SystemCommand("Memory map: reset zoom", "Show all of physical memory (0)",
                            lambda: self._screen_action("zoom_reset", fallback="memory"))
        yield SystemCommand("Handover: cycle view", "Decoded / DTS / hex (v)",
                            lambda: self._screen_action("cycle_view", fallback="handover"))
        yield from super().get_system_commands(screen)

    def _screen_action(self, action: str, fallback: str | None = None) -> None:
        if fallback and self.current_mode != fallback and not hasattr(self.screen, f"action_{action}"):
            self.switch_mode(fallback)
        self.call_after_refresh(self._run_screen_action, action)

    def _run_screen_action(self, action: str) -> None:
        method = getattr(self.screen, f"action_{action}", None)
        if method is None:
            self.notify(f"'{action}' is not available on this screen", severity="warning")
            return
        result = method()
        if hasattr(result, "__await__"):
            self.run_worker(result)


def run_app(root: Path, demo: bool = False, *, syscalls: Syscalls | None = None) -> int:
    """Entry point for `khotui`, `khotui --root DIR` and `khotui --demo`."""
    source = Source(root, demo=demo, syscalls=syscalls)
    app = KhotuiApp(source)
    app.run()
    return app.return_code or 0
