"""`khotui snapshot OUT` writes only inside OUT, and OUT is the euid's alone (issue #10).

Root takes snapshots, often into a path another user can reach: each test plants what such a
user would (a directory of their own, a link in OUT while the copy runs, a hostile source tree)
and checks that nothing is written outside OUT and that OUT comes out 0700, files 0600.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from khotui.cli import main as cli
from khotui.errors import KhotuiError
from khotui.host.snapshot import MANIFEST, MAX_TREE_DEPTH, write_snapshot
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES, python_runs_as

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root, to own OUT as a second user (nobody)")


def _source(tmp_path: Path) -> Path:
    """A small snapshot-shaped source with the files the attacks aim at (dmesg, etc/hostname)."""
    src = tmp_path / "src"
    (src / "proc/sys/kernel").mkdir(parents=True)
    (src / "proc/cmdline").write_text("kho=on root=/dev/vda\n")
    (src / "proc/iomem").write_text("00000000-00000fff : Reserved\n")
    (src / "proc/sys/kernel/osrelease").write_text("7.3.4\n")
    (src / "etc").mkdir()
    (src / "etc/hostname").write_text("* * * * * root touch /tmp/pwned\n")
    (src / "sys/kernel/kexec").mkdir(parents=True)
    (src / "sys/kernel/kexec/loaded").write_text("0\n")
    (src / "dmesg").write_text("[    0.000000] Linux version 7.3.4\n")
    return src


def _capture() -> Path | None:
    return next(iter(sorted(CAPTURES.glob("*/sysroot"))), None) if CAPTURES.is_dir() else None


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    yield ".", os.lstat(root)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            yield str(path.relative_to(root)), os.lstat(path)


def _snapshot_cli(src: Path, out: Path, capsys) -> tuple[int, str]:
    code = cli.main(["snapshot", "--root", str(src), str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


# --- OUT itself ---------------------------------------------------------------------------


@needs_root
def test_an_out_owned_by_another_user_is_refused_and_left_alone(tmp_path, capsys):
    """The issue's first reproduction: `nobody` makes an empty OUT and waits to plant links."""
    out = tmp_path / "race"
    out.mkdir()
    out.chmod(0o777)
    os.chown(out, NOBODY, NOBODY)
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(_source(tmp_path)), out)
    assert f"owned by uid {NOBODY}" in err.value.message and err.value.fix
    assert err.value.path == str(out)
    assert list(out.iterdir()) == []
    st = os.stat(out)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o777)   # not even a chmod
    code, stderr = _snapshot_cli(tmp_path / "src", out, capsys)
    assert code == cli.EXIT_USAGE and f"owned by uid {NOBODY}" in stderr and "fix:" in stderr


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv to run the attacker")
def test_the_planted_dmesg_race_from_the_issue_does_not_reach_the_victim(tmp_path):
    """`nobody` creates race/, waits for race/proc, plants race/dmesg -> a root-only file."""
    sandbox = Path(tempfile.mkdtemp(prefix="khotui-race-", dir="/tmp"))
    try:
        sandbox.chmod(0o1777)   # like /tmp: anyone may create, only the owner remove
        victim = tmp_path / "victim"
        victim.write_text("root only\n")
        victim.chmod(0o600)
        race = sandbox / "race"
        attacker = textwrap.dedent(f"""
            import os, time
            os.mkdir({str(race)!r}, 0o777)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                if os.path.isdir({str(race / "proc")!r}):
                    os.symlink({str(victim)!r}, {str(race / "dmesg")!r})
                    break
        """)
        # the attacker is stdlib only: any Python nobody can start (conftest.python_runs_as)
        python = next((p for p in (sys.executable, "/usr/bin/python3")
                       if python_runs_as(NOBODY, p)), None)
        if python is None:
            pytest.skip("no Python that nobody can start, to run the attacker")
        proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                 "--clear-groups", python, "-c", attacker])
        try:
            for _ in range(500):
                if race.exists():
                    break
                time.sleep(0.01)
            src = _source(tmp_path)
            for i in range(500):   # some work between race/proc and race/dmesg, as on a host
                (src / f"sys/kernel/kexec/attr{i}").write_text(f"{i}\n")
            refused: KhotuiError | None = None
            try:
                write_snapshot(Sysroot(src), race)
            except KhotuiError as exc:
                refused = exc
            proc.wait(10)
        finally:
            proc.kill()
            proc.wait()
        assert victim.read_text() == "root only\n"
        assert refused is not None and "owned by uid" in refused.message
        assert not (race / "proc").exists()
    finally:
        shutil.rmtree(sandbox)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o027])
def test_a_new_out_is_0700_with_dirs_0700_and_files_0600_whatever_the_umask(tmp_path, umask):
    src = _capture() or _source(tmp_path)
    out = tmp_path / "new/snap"   # the missing parent is made too
    old = os.umask(umask)
    try:
        write_snapshot(Sysroot(src), out)
    finally:
        os.umask(old)
    modes = {rel: (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)) for rel, st in _entries(out)}
    assert MANIFEST in modes and len(modes) > 5
    wrong = {rel: oct(mode) for rel, (kind, mode) in modes.items()
             if (kind, mode) not in ((stat.S_IFDIR, 0o700), (stat.S_IFREG, 0o600))}
    assert wrong == {}


def test_an_empty_out_of_our_own_that_others_could_write_is_made_0700(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o2775)
    write_snapshot(Sysroot(_source(tmp_path)), out)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert (out / "proc/cmdline").read_text() == "kho=on root=/dev/vda\n"


def test_an_out_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(_source(tmp_path)), tmp_path / "out")
    assert "symbolic link" in err.value.message and err.value.fix
    assert list(elsewhere.iterdir()) == []


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(_source(tmp_path)), tmp_path / "out")
    assert "not a directory" in err.value.message
    assert (tmp_path / "out").read_text() == "x"


# --- entries planted inside OUT while the copy runs -----------------------------------------


def _plant_on_first_read(monkeypatch, out: Path, plants: dict[str, Path]) -> None:
    """Run the race deterministically: the plants appear in OUT once the copy has started (OUT
    exists, nothing below it yet), as a user writing into OUT would make them."""
    real = Sysroot.read_bytes
    done = []

    def read_bytes(self, host_path, **kw):
        if not done:
            done.append(True)
            for name, target in plants.items():
                (out / name).symlink_to(target)
        return real(self, host_path, **kw)

    monkeypatch.setattr(Sysroot, "read_bytes", read_bytes)


@pytest.mark.parametrize("planted", ["proc", "dmesg", "etc", "dangling-dmesg"])
def test_a_link_planted_in_out_is_never_written_through(tmp_path, monkeypatch, planted):
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    name, target = {"proc": ("proc", victim_dir), "dmesg": ("dmesg", victim),
                    "etc": ("etc", victim_dir),
                    "dangling-dmesg": ("dmesg", victim_dir / "created")}[planted]
    out = tmp_path / "out"
    _plant_on_first_read(monkeypatch, out, {name: target})
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(_source(tmp_path)), out)
    assert victim.read_text() == "root only\n"
    assert list(victim_dir.iterdir()) == []
    # the operator is told which entry, that OUT is incomplete, and to remove it
    assert str(out / name) in err.value.message and "incomplete" in err.value.message
    assert err.value.path == str(out) and f"rm -r -- {out}" in (err.value.fix or "")


def test_a_hostile_root_and_a_planted_etc_do_not_reach_a_cron_directory(tmp_path, monkeypatch,
                                                                         capsys):
    """The issue's second reproduction: `--root` at a hostile snapshot whose etc/hostname is a
    crontab line, and `OUT/etc -> /etc/cron.d`; here the cron directory is a stand-in."""
    cron = tmp_path / "cron.d"
    cron.mkdir()
    src = _source(tmp_path)
    (src / "etc").mkdir(exist_ok=True)
    (src / "etc" / "hostname").write_text("* * * * * root touch /tmp/pwned\n")
    out = tmp_path / "out"
    _plant_on_first_read(monkeypatch, out, {"etc": cron})
    code, stderr = _snapshot_cli(src, out, capsys)
    assert list(cron.iterdir()) == []
    assert code == cli.EXIT_USAGE
    assert f"{out}/etc" in stderr and "incomplete" in stderr and "fix:" in stderr
    # without the plant, the copy's etc is a directory of OUT's own
    monkeypatch.undo()
    out2 = tmp_path / "out2"
    code, _ = _snapshot_cli(src, out2, capsys)
    assert code == cli.EXIT_OK
    assert not (out2 / "etc").is_symlink() and (out2 / "etc").is_dir()
    assert list(cron.iterdir()) == []


def test_a_source_etc_linking_out_of_the_root_is_not_copied(tmp_path, capsys):
    """The hostile source's etc is itself a link out of it: reads resolve beneath the root
    (khotui.host.beneath), so nothing from outside is copied and the target is untouched."""
    src = _source(tmp_path)
    outside = tmp_path / "target-dir"
    outside.mkdir()
    (outside / "hostname").write_text("secret-from-outside\n")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    shutil.rmtree(src / "etc", ignore_errors=True)
    (src / "etc").symlink_to(outside)
    out = tmp_path / "out"
    code, _ = _snapshot_cli(src, out, capsys)
    assert code == cli.EXIT_OK
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    copied = [p for p in out.rglob("*") if p.is_file()]
    assert all(b"secret-from-outside" not in p.read_bytes() for p in copied)


def test_a_release_name_that_climbs_out_is_not_copied(tmp_path):
    """/proc/sys/kernel/osrelease names /boot/config-<release>: from a hostile source, a release
    `x/../../../escaped` would read beside the source and write beside OUT."""
    src = tmp_path / "a/b/src"
    (src / "proc/sys/kernel").mkdir(parents=True)
    (src / "boot/config-x").mkdir(parents=True)
    release = "x/../../../escaped"
    (src / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (tmp_path / "a/b/escaped").write_text("* * * * * root touch /tmp/pwned\n")
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
    assert skipped == [f"/boot/config-{release}: not a plain path ('.', '..', an empty name or "
                       "NUL); not copied"]


# --- a source tree too deep to walk -----------------------------------------------------------


def test_a_tree_1100_levels_deep_is_cut_with_its_reason(tmp_path, capsys):
    """Was a RecursionError ("internal error") and a partial snapshot."""
    src = _source(tmp_path)
    deep = src / "sys/kernel/kexec" / "/".join(["d"] * 1100)
    path = src / "sys/kernel/kexec"
    for _ in range(1100):   # not os.makedirs: it recurses too
        path = path / "d"
        path.mkdir()
    assert path == deep
    (deep / "bottom").write_text("x\n")
    try:
        _check_the_deep_tree_is_cut(src, tmp_path, capsys)
    finally:   # pytest's own clean-up (shutil.rmtree) recurses, and would fail at exit
        (deep / "bottom").unlink()
        while path != src / "sys/kernel/kexec":
            path.rmdir()
            path = path.parent


def _check_the_deep_tree_is_cut(src: Path, tmp_path: Path, capsys) -> None:
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    cut = "/sys/kernel/kexec" + "/d" * (MAX_TREE_DEPTH - 2)
    assert skipped == [f"{cut}: more than {MAX_TREE_DEPTH} directories deep, which no host tree "
                       "khotui reads is; not copied below here"]
    assert (tmp_path / "out/sys/kernel/kexec/loaded").read_text() == "0\n"
    assert (tmp_path / "out" / cut.lstrip("/")).parent.is_dir()
    assert not (tmp_path / "out" / cut.lstrip("/")).exists()
    assert (tmp_path / "out" / MANIFEST).is_file()
    code, stderr = _snapshot_cli(src, tmp_path / "cli", capsys)
    assert code == cli.EXIT_OK and "directories deep" in stderr


def test_links_out_of_the_source_tell_nothing_about_what_lies_outside(tmp_path, capsys):
    """In a tree the snapshot walks (kho/out/sub_fdts), links out of the source to an existing
    directory, an existing file and a missing path are refused alike: the copier never follows
    one even to ask what it points at, so the snapshot tells nothing of the host outside."""
    src = _source(tmp_path)
    sub = src / "sys/kernel/debug/kho/out/sub_fdts"
    sub.mkdir(parents=True)
    (sub / "kept").write_bytes(b"\xd0\x0d\xfe\xed")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    (sub / "to-dir").symlink_to(outside)
    (sub / "to-file").symlink_to(outside / "secret")
    (sub / "to-nothing").symlink_to(tmp_path / "no-such-path")
    out = tmp_path / "out"
    code, err = _snapshot_cli(src, out, capsys)
    assert code == cli.EXIT_OK
    reasons = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1]
               for line in err.splitlines() if "sub_fdts/to-" in line}
    assert set(reasons) == {"to-dir", "to-file", "to-nothing"}
    assert len(set(reasons.values())) == 1 and "leads out of the snapshot" in reasons["to-dir"]
    copied = out / "sys/kernel/debug/kho/out/sub_fdts"
    assert sorted(p.name for p in copied.iterdir()) == ["kept"]
