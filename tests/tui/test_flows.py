"""The app driven as an operator drives it: keys in, screen text and app state out.

Every capture in ../shared/kho is opened and walked through all five screens; the load flow
runs to the result against a fake syscall seam (never the kernel); the refused load (64 MiB
initrd into scratch-too-small) and KHO off show their explanations.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from khotui.load.audit import AuditSink
from khotui.tui.app import KhotuiApp
from khotui.tui.viewmodel import Source
from tests.conftest import CAPTURES, capture_names
from tests.fakes import FakeKernel, logs_like
from tests.tui.helpers import KERNEL, copy_demo, make_initrd, press, screen_text, settle, type_text

pytestmark = pytest.mark.asyncio


def app_for(root: Path, **kw) -> KhotuiApp:
    return KhotuiApp(Source(root, **kw), theme="khotui")



@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    """Each test its own load lock directory: a session a test leaves open (a dialog never
    answered) must not hold the lock of the next test, nor this machine's /run/khotui."""
    from khotui.load import lock
    monkeypatch.setattr(lock, "LOCK_DIR", str(tmp_path / "run-khotui"))

@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return copy_demo(tmp_path)


async def test_overview_on_the_demo_shows_kho_scratch_kexec_and_findings(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert app.current_mode == "overview"
        assert "kho-v4" in text and "DRY RUN" in text
        assert "0x76c00000" in text and "lowmem" in text          # scratch[0]
        assert "233 of 293 bytes" in text                          # the truncation warning
        assert "load limit" in text and "unlimited" in text
        assert "✓ ok" in text and "kho-enabled" in text


@pytest.mark.parametrize("capture", capture_names())
async def test_every_screen_opens_on_every_capture(capture):
    root = CAPTURES / capture / "sysroot"
    app = app_for(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert "unavailable" not in screen_text(app)  # every overview panel reads
        for key, mode in (("2", "memory"), ("3", "handover"), ("4", "prepare"), ("5", "plan"),
                          ("1", "overview")):
            await press(pilot, app, key)
            assert app.current_mode == mode
            assert "Traceback" not in screen_text(app)
        await press(pilot, app, "2")
        text = screen_text(app)
        assert "node0" in text and "iomem" in text
        await press(pilot, app, "3")
        text = screen_text(app)
        if (root / "sys/kernel/debug/kho").exists():
            assert "outgoing (kho/out)" in text
        else:
            assert "KHO" in text and "off" in text


async def test_memory_map_zoom_and_iomem_search(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "2")
        bands = app.screen.query_one("MemoryBands")
        assert bands.has_focus and len(bands.bands) == 2        # node0, node1
        await press(pilot, app, "n")                             # next scratch region
        assert bands.bands[0].label.startswith("scratch[")
        await press(pilot, app, "plus", "minus", "0")
        assert len(bands.bands) == 2
        await press(pilot, app, "slash")
        await type_text(pilot, app, "Kernel code")
        await press(pilot, app, "enter")
        assert "Kernel code" in screen_text(app)
        await press(pilot, app, "enter")                         # pick the match: zoom to it
        assert bands.bands[0].label == "Kernel code"
        await press(pilot, app, "slash")                         # by address: the ranges holding it
        search = app.screen.query_one("#iomem-search")
        search.value = ""
        await type_text(pilot, app, "0x57a00000")
        await press(pilot, app, "enter")
        results = app.screen.query_one("#iomem-results")
        assert [str(results.get_option_at_index(i).prompt).split(" ", 1)[1]
                for i in range(results.option_count)] == ["System RAM", "Kernel code"]


async def test_handover_explorer_cycles_decoded_dts_hex(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "3")
        assert "preserved-memory-map" in screen_text(app)
        await press(pilot, app, "v")
        assert "/dts-v1/;" in screen_text(app)
        await press(pilot, app, "v")
        assert "00000000" in screen_text(app)                   # hex offsets
        await press(pilot, app, "down", "down", "down")          # kexec-metadata struct
        await press(pilot, app, "v")
        text = screen_text(app)
        assert "kexec-metadata" in text


async def test_prepare_plan_confirm_dry_run_on_the_demo(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, app, "4")
        text = screen_text(app)
        assert "7.3.4" in text and "/boot/vmlinuz-7.3.4" in text
        await press(pilot, app, "e")
        await type_text(pilot, app, " quiet")
        assert "+ added" in screen_text(app) and "quiet" in screen_text(app)
        await press(pilot, app, "escape", "p")
        assert app.current_mode == "plan"
        assert app.plan is not None and app.plan.would_succeed
        text = screen_text(app)
        assert "would succeed" in text and "0x7ca00000" in text   # kernel, as the capture
        await press(pilot, app, "l")
        assert "Type the host name" in screen_text(app) and "DRY RUN" in screen_text(app)
        await type_text(pilot, app, "demo")
        await press(pilot, app, "enter")
        text = screen_text(app)
        assert app.result is not None and app.result.dry_run
        assert "nothing was loaded" in text


async def test_cmdline_without_kho_on_warns_and_the_plan_fails(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "4", "e")
        for _ in range(len(" kho=on")):
            await pilot.press("backspace")
        await settle(pilot, app)
        assert "no kho=on" in screen_text(app)
        await press(pilot, app, "escape", "p")
        assert not app.plan.would_succeed
        assert "cmdline-kho" in screen_text(app) and "fix" in screen_text(app)


async def _pick_files(pilot, app, kernel: Path, initrd: Path | None) -> None:
    await press(pilot, app, "4", "o")
    await type_text(pilot, app, str(kernel))
    await press(pilot, app, "enter")
    if initrd is not None:
        await press(pilot, app, "i")
        await type_text(pilot, app, str(initrd))
        await press(pilot, app, "enter")


def _copy_capture(name: str, tmp_path: Path) -> Path:
    import shutil
    root = tmp_path / name / "sysroot"
    shutil.copytree(CAPTURES / name / "sysroot", root, symlinks=True)
    return root


@pytest.mark.skipif(not KERNEL.exists(), reason="the KHO kernel in ../shared/vm is needed")
async def test_load_goes_to_the_syscall_seam_and_shows_actual_vs_predicted(tmp_path):
    root = _copy_capture("two-nodes", tmp_path)
    initrd = make_initrd(8 << 20, tmp_path / "initrd.cpio")
    fake = FakeKernel(on_load=logs_like("two-nodes", root))
    app = app_for(root, syscalls=fake, dry_run=False, sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert "DRY RUN" not in screen_text(app)
        await _pick_files(pilot, app, KERNEL, initrd)
        await press(pilot, app, "p")
        assert app.plan.would_succeed, screen_text(app)
        assert "0x7c200000" in screen_text(app)                  # the capture's initrd address
        await press(pilot, app, "l")
        text = screen_text(app)
        assert "sha256" in text and "two-nodes" in text
        assert "Load anyway" not in text                          # nothing to override
        await type_text(pilot, app, "wrong")
        await press(pilot, app, "enter")
        assert fake.calls == []                                   # a wrong name loads nothing
        await press(pilot, app, *["backspace"] * 5)
        await type_text(pilot, app, "two-nodes")
        await press(pilot, app, "enter")
        assert len(fake.calls) == 1
        (call,) = fake.calls
        assert b"kho=on" in call.cmdline and b"BOOT_IMAGE" not in call.cmdline
        assert call.flags & 0x8                                   # KEXEC_FILE_DEBUG
        assert call.kernel == KERNEL.read_bytes() and call.initrd == initrd.read_bytes()
        assert app.result.ok and not app.result.dry_run
        text = screen_text(app)
        assert "kexec_file_load succeeded" in text and "where the preview said" in text
        # the kernel's own placement beside the preview, segment by segment
        assert "predicted" in text and "actual" in text
        rows = [line for line in text.splitlines() if "✓ same" in line]
        assert len(rows) == 5, text
        assert any("initrd" in r and r.count("0x7c200000") == 2 for r in rows), text
        assert "kexec -e" in text                                 # how to execute (no systemd)
        assert (tmp_path / "khotui.log").exists()
        # the same receipt `khotui load` writes (conftest: the default path is in tmp_path)
        from khotui.load import receipt
        rec = receipt.read(receipt.DEFAULT_PATH)
        assert rec["cmdline"].encode() == call.cmdline.rstrip(b"\0")
        assert f"receipt: {receipt.DEFAULT_PATH}" in app.result.next_steps[-1]


@pytest.mark.skipif(not KERNEL.exists(), reason="the KHO kernel in ../shared/vm is needed")
async def test_a_failing_check_refuses_the_load_before_the_syscall(tmp_path):
    root = CAPTURES / "scratch-too-small" / "sysroot"
    initrd = make_initrd(64 << 20, tmp_path / "initrd64.cpio")
    fake = FakeKernel(errno.EADDRNOTAVAIL)
    app = app_for(root, syscalls=fake, dry_run=False, sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await _pick_files(pilot, app, KERNEL, initrd)
        await press(pilot, app, "p")
        assert not app.plan.would_succeed
        text = screen_text(app)
        assert "fits nowhere" in text and "EADDRNOTAVAIL" in text
        await press(pilot, app, "l")
        assert "Load anyway, overriding" in screen_text(app)
        await type_text(pilot, app, "scratch-too-small")
        await press(pilot, app, "enter")
        assert fake.calls == []
        text = " ".join(screen_text(app).split())
        assert not app.result.ok and "Refused: a check fails" in text
        assert "nothing was loaded" in text and "segments-fit: EADDRNOTAVAIL" in text
        assert "kho_scratch=" in text                              # what to do about it


@pytest.mark.skipif(not KERNEL.exists(), reason="the KHO kernel in ../shared/vm is needed")
async def test_forced_load_eaddrnotavail_names_the_initrd_and_the_regions(tmp_path):
    root = CAPTURES / "scratch-too-small" / "sysroot"
    initrd = make_initrd(64 << 20, tmp_path / "initrd64.cpio")
    fake = FakeKernel(errno.EADDRNOTAVAIL)
    app = app_for(root, syscalls=fake, dry_run=False, sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await _pick_files(pilot, app, KERNEL, initrd)
        await press(pilot, app, "p", "l")
        await type_text(pilot, app, "scratch-too-small")
        await press(pilot, app, "tab", "space")                 # tick the override
        assert app.screen.query_one("#confirm-force").value
        await press(pilot, app, "shift+tab", "enter")
        assert len(fake.calls) == 1                               # forced: the kernel answers
        r = app.result
        assert not r.ok and r.errno == "EADDRNOTAVAIL"
        assert r.cause.startswith("initrd (64 MiB) fits in no scratch region: lowmem")
        assert "global" in r.cause and "kho_scratch=" in r.fix
        text = " ".join(screen_text(app).split())
        assert "Load failed: EADDRNOTAVAIL" in text
        assert "initrd (64 MiB) fits in no scratch region" in text
        assert "failing checks overridden by the operator: segments-fit" in text
        assert "initrd — 64 MiB" in text                           # the prediction beside it


async def test_kho_off_explains_itself():
    app = app_for(CAPTURES / "kho-off" / "sysroot")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert "KHO off" in text and "kho=off" in text and "fix" in text
        assert "no scratch regions" in text
        await press(pilot, app, "3")
        assert "nothing is handed over" in screen_text(app) or "KHO" in screen_text(app)


def _image_loaded(root: Path) -> None:
    path = root / "sys" / "kernel" / "kexec_loaded"
    if path.exists():
        path.chmod(0o644)
    path.write_text("1\n")


async def test_unload_is_not_offered_when_no_image_is_loaded(demo):
    """Issue #13 item 8: the demo has no image loaded (kexec_loaded 0): no Unload in the key
    bar, and u opens no dialog but says why."""
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, app, "u")
        text = screen_text(app)
        assert "Unload the loaded kexec image" not in text and "u Unload" not in text


async def test_unload_asks_first_and_is_a_dry_run_on_a_snapshot(demo):
    kexec_loaded = demo / "sys" / "kernel" / "kexec_loaded"
    kexec_loaded.chmod(0o644)
    kexec_loaded.write_text("1\n")     # an image loaded: Unload is offered
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, app, "u")
        assert "Unload the loaded kexec image" in screen_text(app)
        # the dialog speaks of unloading, not loading (issue #13 item 8)
        assert "nothing will be unloaded" in " ".join(screen_text(app).split())
        await press(pilot, app, "escape")
        assert app.result is None
        await press(pilot, app, "u")
        await type_text(pilot, app, "demo")
        await press(pilot, app, "enter")
        assert app.result.dry_run and "nothing was unloaded" in screen_text(app)


@pytest.mark.parametrize("fail", [0, errno.EPERM])
async def test_unload_goes_to_the_same_fake_kernel_and_explains_a_refusal(tmp_path, fail):
    root = _copy_capture("two-nodes", tmp_path)
    _image_loaded(root)   # Unload is offered only with an image loaded (issue #13)
    fake = FakeKernel(fail)
    app = app_for(root, syscalls=fake, dry_run=False, sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "u")
        await type_text(pilot, app, "two-nodes")
        await press(pilot, app, "enter")
        (call,) = fake.calls
        assert call.flags == 0x1 and call.kernel_fd == -1          # KEXEC_FILE_UNLOAD
        text = " ".join(screen_text(app).split())
        if fail:
            assert not app.result.ok and "Unload failed: EPERM" in text
            assert "CAP_SYS_BOOT" in app.result.message and app.result.fix
        else:
            assert app.result.ok and "the kexec image is unloaded" in text
    assert (tmp_path / "khotui.log").exists()


async def test_help_lists_the_focused_screens_bindings(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "4", "question_mark")
        await pilot.pause(0.3)                                     # Markdown renders async
        await settle(pilot, app)
        text = screen_text(app)
        assert "Prepare load" in text and "prepare-plan" in text and "Kernel file" in text
        await press(pilot, app, "escape", "2", "f1")
        await pilot.pause(0.3)
        await settle(pilot, app)
        text = screen_text(app)
        assert "Memory map" in text and "map-zoom-in" in text


async def test_command_palette_reaches_every_screen(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await press(pilot, app, "ctrl+p")
        await type_text(pilot, app, "Handover")
        await press(pilot, app, "enter")
        assert app.current_mode == "handover"


async def test_an_unreadable_source_shows_a_message_not_a_crash(tmp_path):
    root = tmp_path / "broken"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "iomem").write_text("this is not iomem\n")
    app = app_for(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for key in "23451":
            await press(pilot, app, key)
        assert app.is_running
        await press(pilot, app, "2")
        assert "unavailable" in screen_text(app) or "/proc/iomem" in screen_text(app)


async def test_key_bar_follows_focus_and_a_click_presses_the_key(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        bottom = lambda: screen_text(app).splitlines()[-1]  # noqa: E731
        assert "p Prepare" in bottom() and bottom().rstrip().endswith("^p palette")
        await press(pilot, app, "2")
        assert "+ Zoom in" in bottom() and "p Prepare" not in bottom()
        assert "esc Map" not in bottom()                         # the map has focus
        await press(pilot, app, "slash")                         # the search box has focus
        assert "/ Search iomem" in bottom() and "Zoom in" not in bottom()
        assert "esc Map" in bottom()
        await press(pilot, app, "escape")                        # back to the map
        assert app.screen.query_one("MemoryBands").has_focus
        await press(pilot, app, "1")
        line = bottom()
        assert app.current_mode == "overview", line
        await pilot.click("KeyBar", offset=(line.index("p Prepare") + 1, 0))
        await settle(pilot, app)
        assert app.current_mode == "prepare"


async def test_the_node_topology_is_read_ahead_while_the_overview_is_shown(demo, monkeypatch):
    """Opening the memory map does not wait for the topology read (250 ms on a 24 TiB host):
    the app reads it while the operator reads the Overview."""
    import khotui.host.memory as memory
    calls = []
    real = memory.read_topology
    monkeypatch.setattr(memory, "read_topology", lambda *a, **k: calls.append(1) or real(*a, **k))
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.pause(0.5)                                    # the operator reads
        await settle(pilot, app)
        assert calls == [1]
        await press(pilot, app, "2")
        assert len(app.screen.query_one("MemoryBands").bands) == 2 and calls == [1]


async def test_memory_blocks_tab_lists_the_runs_with_a_cursor(demo):
    app = app_for(demo, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, app, "2", "b")
        table = app.screen.query_one("#blocks")
        assert table.has_focus
        text = screen_text(app)
        assert "node  blocks" in text and "state" in text and "(s reads)" not in text
        assert "memory0–7 (8)" in text and "memory8–15 (8)" in text and "online" in text
        await press(pilot, app, "down")
        assert table.cursor == 1
        await press(pilot, app, "down", "home")
        assert table.cursor == 0
        await press(pilot, app, "end")
        assert table.cursor == table.row_count - 1 == 1


async def test_a_long_iomem_tree_follows_the_picture_and_is_shown():
    """On a big host the tree comes a frame after the picture (no frame carries both), and
    it does come."""
    from bench.gen_sysroot import cached
    app = app_for(cached("100x", snapshot=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await press(pilot, app, "2")
        await settle(pilot, app)
        assert app.screen.query_one("#mem-switcher").display
        tree = app.screen.query_one("#iomem-tree")
        assert len(tree.root.children) > 40 and tree.region.height > 10
        assert tree.root.children[0].label.plain.split(" ", 1)[1] in screen_text(app)


@pytest.mark.skipif(not KERNEL.exists(), reason="the KHO kernel in ../shared/vm is needed")
async def test_an_empty_host_name_is_never_confirmed(tmp_path, monkeypatch):
    # issue #10: with an empty host name, typing nothing "confirmed" the load
    root = _copy_capture("two-nodes", tmp_path)
    initrd = make_initrd(8 << 20, tmp_path / "initrd.cpio")
    fake = FakeKernel(on_load=logs_like("two-nodes", root))
    monkeypatch.setattr(Source, "_read_hostname", lambda self: "")
    app = app_for(root, syscalls=fake, dry_run=False,
                  sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await _pick_files(pilot, app, KERNEL, initrd)
        await press(pilot, app, "p", "l")
        await press(pilot, app, "enter")
        assert fake.calls == []
        assert app.screen.query_one("#confirm-yes").disabled


@pytest.mark.skipif(not KERNEL.exists(), reason="the KHO kernel in ../shared/vm is needed")
async def test_the_force_box_overrides_only_the_checks_it_named(tmp_path):
    # issue #10: the box named segments-fit; kexec-load-disabled began failing afterwards and
    # was overridden too
    root = _copy_capture("scratch-too-small", tmp_path)
    initrd = make_initrd(64 << 20, tmp_path / "initrd64.cpio")
    fake = FakeKernel(errno.EADDRNOTAVAIL)
    app = app_for(root, syscalls=fake, dry_run=False,
                  sink=AuditSink(tmp_path / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await _pick_files(pilot, app, KERNEL, initrd)
        await press(pilot, app, "p")
        await press(pilot, app, "l")
        await settle(pilot, app)
        assert "overriding segments-fit" in " ".join(screen_text(app).split())
        await type_text(pilot, app, "scratch-too-small")
        await press(pilot, app, "tab", "space")
        (root / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")  # after the dialog
        await press(pilot, app, "shift+tab", "enter")
        assert fake.calls == []
        text = " ".join(screen_text(app).split())
        assert not app.result.ok and "kexec-load-disabled" in text


async def test_unload_with_an_unusable_audit_log_is_refused_before_the_dialog(tmp_path):
    # issue #10, finding 6, the app's side: `khotui unload` checks the log before asking; the
    # app asked first, then found out
    root = _copy_capture("two-nodes", tmp_path)
    _image_loaded(root)   # Unload is offered only with an image loaded (issue #13)
    fake = FakeKernel()
    app = app_for(root, syscalls=fake, dry_run=False,
                  sink=AuditSink(tmp_path / "no-such-dir" / "khotui.log", syslog=None))
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "u")
        text = " ".join(screen_text(app).split())
        assert app.result is not None and app.result.title == "Not unloaded"
        assert "Type the host name" not in text and "audit log" in app.result.message
        assert fake.calls == []


async def test_kho_on_without_debugfs_shows_on_scratch_unknown_and_the_fix(demo):
    """The demo capture with its debugfs tree gone (a host that never mounted debugfs): the
    Overview says KHO on, scratch unknown, why and the fix, never "off"; the Plan says there is
    no exact prediction."""
    import shutil
    shutil.rmtree(demo / "sys/kernel/debug")
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        assert "KHO on" in text and "scratch regions unknown" in text
        assert "mount -t debugfs none" in text and "KHO off" not in text
        await press(pilot, app, "4", "p")
        assert app.plan is not None and not app.plan.would_succeed
        text = screen_text(app)
        assert "prediction: not exact: no placement could be predicted" in text


async def test_plan_screen_labels_assumptions_and_notes(demo, tmp_path):
    # the demo keeps its running kernel's purgatory (khotui-purgatory.ro): nothing is guessed
    app = app_for(demo, demo=True)
    async with app.run_test(size=(120, 60)) as pilot:
        await press(pilot, app, "4", "p")
        text = screen_text(app)
        assert "prediction: exact" in text and "note KHO on: every segment" in text
        assert "assumed " not in text
    # without that record the purgatory is the test build's: a guess, labelled as one
    (tmp_path / "bare").mkdir()
    root = copy_demo(tmp_path / "bare")
    (root / "khotui-purgatory.ro").unlink()
    app = app_for(root)
    async with app.run_test(size=(120, 60)) as pilot:
        await press(pilot, app, "4", "p")
        text = screen_text(app)
        assert "prediction: not exact: 1 assumption" in text
        assert "assumed purgatory: size from the 7.3.4 test build" in text
