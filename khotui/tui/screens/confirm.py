"""The confirmations: exactly what will be loaded (or unloaded), and the host name typed back."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from khotui.tui import fmt
from khotui.tui._hooks import HeldOutputApp
from khotui.tui.viewmodel import Plan
from khotui.tui.widgets.findings import findings_content
from khotui.tui.widgets.steady import SteadyInput


class _TypedConfirm(ModalScreen["bool | str"]):
    """Shared shape: a body, an input that must equal the host name, Confirm/Cancel."""

    DEFAULT_CSS = """
    _TypedConfirm { align: center middle; }
    _TypedConfirm > Vertical { width: 94%; max-width: 110; height: auto; max-height: 96%;
                               border: thick $warning; background: $surface; padding: 0 1; }
    _TypedConfirm #confirm-body { height: auto; max-height: 14; }
    _TypedConfirm #confirm-buttons { height: auto; align-horizontal: right; }
    _TypedConfirm Button { margin-left: 1; min-width: 10; }
    _TypedConfirm #confirm-hint { height: auto; }
    _TypedConfirm #confirm-force { margin-top: 1; border: none; }
    /* A short terminal (80x24): the dialog takes the whole height and the plan scrolls in what
       the controls leave, so the host name, "Load anyway" and both buttons stay on screen. */
    _TypedConfirm.-short > Vertical { height: 100%; max-height: 100%; }
    _TypedConfirm.-short #confirm-body { height: 1fr; max-height: 100%; }
    _TypedConfirm.-short #confirm-force { margin-top: 0; }
    """
    # below this many rows, the auto-height dialog (a 14-row plan + the controls) would not fit
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm-cancel")]

    def __init__(self, hostname: str, *, dry_run: bool, title: str, action: str) -> None:
        super().__init__()
        self.hostname = hostname
        self.dry_run = dry_run
        self.title_text = title
        self.action_word = action

    # what a dry run leaves undone, in the dialog's own verb ("loaded", "unloaded")
    dry_run_verb = "loaded"

    def body(self) -> Content:
        return Content("")

    def extra(self) -> ComposeResult:
        """Widgets between the host name and the buttons."""
        yield from ()

    def confirm_value(self) -> bool | str:
        return True

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = self.title_text + (" — DRY RUN" if self.dry_run else "")
            with VerticalScroll(id="confirm-body"):
                yield Static(self.body())
            if self.dry_run:
                yield Static(Content.from_markup(
                    "[b $warning]This is a snapshot, not the live host: nothing will be "
                    f"{self.dry_run_verb}. Confirming runs the same checks as a dry run and "
                    "shows the result.[/]"),
                    id="confirm-dry")
            yield Static(Content.from_markup("Type the host name [b]$h[/] to confirm:", h=self.hostname),
                         id="confirm-hint")
            yield SteadyInput(placeholder=self.hostname, id="confirm-host")
            yield from self.extra()
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="confirm-no")
                yield Button(self.action_word + (" (dry run)" if self.dry_run else ""),
                             id="confirm-yes", variant="warning", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-host", Input).focus()
        # one frame for the dialog, not the three or four its layout settles in (each a full
        # 80x24 screen over SSH, ~10 KB): held until mounted and laid out (HeldOutputApp)
        app = self.app
        if isinstance(app, HeldOutputApp):
            app.hold_output(self, 0.5)
            self.set_timer(0.15, lambda: self.call_after_refresh(app.release_output, self))

    def _matches(self, typed: str) -> bool:
        # an empty host name is never confirmed: typing nothing must not load
        return bool(self.hostname.strip()) and typed.strip() == self.hostname.strip()

    @on(Input.Changed, "#confirm-host")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm-yes", Button).disabled = not self._matches(event.value)

    @on(Input.Submitted, "#confirm-host")
    def _submitted(self, event: Input.Submitted) -> None:
        if self._matches(event.value):
            self.dismiss(self.confirm_value())
        else:
            self.notify(f"type {self.hostname!r} exactly to confirm, or esc to cancel",
                        severity="warning")

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        if self._matches(self.query_one("#confirm-host", Input).value):
            self.dismiss(self.confirm_value())

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)


class ConfirmLoadScreen(_TypedConfirm):
    def __init__(self, plan: Plan, hostname: str, *, dry_run: bool,
                 shown: Callable[[str], str] = str) -> None:
        super().__init__(hostname, dry_run=dry_run, title="Load this kernel with kexec_file_load",
                         action="Load")
        self.plan = plan
        self.shown = shown

    def body(self) -> Content:
        p = self.plan
        rows: list[Content] = []
        files = p.files or ([(p.request.kernel, "", None)]
                            + ([(p.request.initrd, "", None)] if p.request.initrd else []))
        # the kernel, then the initrd when there is one: zip stops at the shorter on purpose
        for (path, sha, size), what in zip(files, ("kernel", "initrd"), strict=False):
            rows.append(Content.from_markup("[b $secondary]$w[/] $p [dim]$z[/]", w=f"{what:<8}",
                                            p=self.shown(path), z=fmt.size(size)))
            rows.append(Content.from_markup("[dim]$s[/]", s=f"{'sha256':<8} {sha or '?'}"))
        if not p.request.initrd:
            rows.append(Content.from_markup("[b $secondary]initrd  [/] none (KEXEC_FILE_NO_INITRAMFS)"))
        rows.append(Content.from_markup("[b $secondary]cmdline [/] $c", c=p.request.cmdline))
        head = Content.from_markup("[b $success]✓ $v[/]" if p.would_succeed else "[b $error]✗ $v[/]",
                                   v=p.verdict)
        out = Content("\n").join([head, *rows])
        if not p.would_succeed:
            out += Content("\n") + findings_content(p.findings, only_problems=True)
        return out

    def _failing(self) -> list[str]:
        return [f.id for f in self.plan.findings if f.status == "fail"]

    def extra(self) -> ComposeResult:
        # khotui load --force: a failing check refuses the load unless the operator overrides
        # it here, by name; the plan is checked again on the opened files either way
        failing = self._failing()
        if failing and not self.dry_run:
            yield Checkbox(f"Load anyway, overriding {', '.join(failing)}", id="confirm-force")

    def confirm_value(self) -> bool | str:
        boxes = self.query("#confirm-force")
        return "force" if boxes and boxes.first(Checkbox).value else True


class ConfirmUnloadScreen(_TypedConfirm):
    dry_run_verb = "unloaded"

    def __init__(self, hostname: str, *, dry_run: bool) -> None:
        super().__init__(hostname, dry_run=dry_run, title="Unload the loaded kexec image",
                         action="Unload")

    def body(self) -> Content:
        return Content.from_markup(
            "kexec_file_load(KEXEC_FILE_UNLOAD) removes the loaded image: a later kexec has "
            "nothing to run until you load again. It counts against kexec_load_limit_reboot.")
