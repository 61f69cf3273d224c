"""A hostile `--root`: links out of the snapshot, FIFOs and devices in it (issue #10, finding 2).

Every attack here is a snapshot directory someone else could have written: a link from
`proc/cmdline` to a file of the host khotui runs on (absolute, or `../..` out), a FIFO where
`proc/iomem` should be, links to /dev/tty and /dev/null, a device node in the tree. Each must be
refused with an error naming the file, promptly, without opening what lies outside; links that
stay inside the tree (sysfs's node <-> memory block links) must still be followed, and the live
host (root `/`) still follows its own links. Every test runs twice: with openat2(2) and with the
user-space walk used where openat2 is missing (khotui.host.beneath).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.errors import KhotuiError
from khotui.host import beneath
from khotui.host.boot import read_boot
from khotui.host.kernels import find_kernels
from khotui.host.memory import block_runs, memory_node_ids, read_memory_blocks, read_topology
from khotui.host.sysroot import Sysroot
from tests.bad_inputs import time_limit
from tests.conftest import CAPTURES, REPO, VM
from tests.fixtures.trees import add_sysfs_links, copy_tree, flatten_sysfs_links

SECRET = "SECRET-7f3a9c-not-for-the-screen"
TWO = CAPTURES / "two-nodes" / "sysroot"
KERNEL = VM / "bzImage-kho-7.3.4"
# a wedged child must fail the test, not the suite: far above a normal run (about 1 s)
TIMEOUT = 60


@pytest.fixture(params=["openat2", "walk"], autouse=True)
def resolver(request: pytest.FixtureRequest) -> object:
    if request.param == "openat2" and not beneath._have_openat2():
        pytest.skip("openat2(2) is not available here (kernel before 5.6, or seccomp)")
    beneath.use_walk(request.param == "walk")
    yield request.param
    beneath.use_walk(False)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    if not TWO.is_dir():
        pytest.skip(f"{TWO} is missing: the real KHO captures are needed for this test")
    return copy_tree(TWO, tmp_path / "snap", writable=True)


# `python -m khotui`, with the user-space walk forced first when asked
_MAIN = ("import sys\nfrom khotui.host import beneath\nbeneath.use_walk({walk})\n"
         "from khotui.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")


def run_cli(*args: str, walk: bool = False) -> subprocess.CompletedProcess[str]:
    """In a child, so a hang is a timeout (a failure), not a wedged test run."""
    return subprocess.run([sys.executable, "-c", _MAIN.format(walk=walk), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def _link(at: Path, target: str | Path) -> None:
    at.unlink()
    os.symlink(target, at)


# ---- links leading out -------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_link_out_of_the_snapshot_is_not_shown_by_status(snap: Path, secret: Path, how: str,
                                                          resolver: str) -> None:
    _link(snap / "proc/cmdline", secret if how == "absolute" else "../../secret")
    result = run_cli("status", "--json", "--root", str(snap), walk=resolver == "walk")
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads(result.stdout)
    assert status["kernel"]["cmdline"] in ("", None)
    error = status["errors"]["boot"]
    assert f"{snap}/proc/cmdline" in error
    assert "leads out of the snapshot" in error and "not one khotui wrote" in error


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_link_out_of_the_snapshot_is_not_shown_by_plan(snap: Path, secret: Path, how: str,
                                                        resolver: str) -> None:
    if not KERNEL.exists():
        pytest.skip(f"{KERNEL} is missing")
    _link(snap / "proc/cmdline", secret if how == "absolute" else "../../secret")
    result = run_cli("plan", "--json", "--root", str(snap), "--kernel", str(KERNEL),
                     walk=resolver == "walk")
    out = result.stdout + result.stderr
    assert SECRET not in out
    assert "Traceback" not in result.stderr
    assert "leads out of the snapshot" in out


def test_snapshot_of_a_root_with_a_link_out_copies_nothing_from_outside(
        snap: Path, secret: Path, tmp_path: Path, resolver: str) -> None:
    _link(snap / "proc/cmdline", "../../secret")
    _link(snap / "proc/version", secret)
    out = tmp_path / "out"
    result = run_cli("snapshot", "--root", str(snap), str(out), walk=resolver == "walk")
    assert "Traceback" not in result.stderr
    for path in out.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET not in path.read_text(errors="replace"), path
    assert "proc/cmdline" in result.stdout + result.stderr


def test_a_directory_link_out_is_refused_for_every_file_below_it(snap: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "kernel").mkdir(parents=True)
    (elsewhere / "kernel/osrelease").write_text(SECRET)
    shutil.rmtree(snap / "proc/sys/kernel", ignore_errors=True)
    (snap / "proc/sys").mkdir(exist_ok=True)
    os.symlink("../../../elsewhere/kernel", snap / "proc/sys/kernel")
    root = Sysroot(snap)
    with pytest.raises(KhotuiError, match="leads out of the snapshot") as info:
        root.read_optional_text("/proc/sys/kernel/osrelease")
    assert info.value.path == f"{snap}/proc/sys/kernel/osrelease"
    with pytest.raises(KhotuiError, match="leads out"):
        root.listdir("/proc/sys/kernel")
    with pytest.raises(KhotuiError, match="leads out"):
        root.exists("/proc/sys/kernel/osrelease")


def test_dot_dot_in_the_host_path_itself_is_refused(snap: Path, secret: Path) -> None:
    """A BLS entry's `linux ../../secret` reaches the readers as a host path with `..` in it."""
    entries = snap / "boot/loader/entries"
    entries.mkdir(parents=True)
    (entries / "evil.conf").write_text("title evil\nversion 9.9\nlinux /../../secret\n")
    root = Sysroot(snap)
    with pytest.raises(KhotuiError, match="leads out"):
        root.read_bytes("/../secret")
    with pytest.raises(KhotuiError, match="leads out") as info:
        find_kernels(root)
    assert "evil" not in str(info.value) or SECRET not in str(info.value)


def test_a_link_loop_is_refused_promptly(snap: Path) -> None:
    _link(snap / "proc/iomem", "iomem2")
    os.symlink("iomem", snap / "proc/iomem2")
    with time_limit(10), pytest.raises(KhotuiError, match="loop of symbolic links") as info:
        Sysroot(snap).read_optional_text("/proc/iomem")
    assert info.value.path == f"{snap}/proc/iomem"


def test_a_proc_magic_link_is_not_followed(snap: Path, secret: Path) -> None:
    """/proc/self/fd/N is no path but a reference to an open file: an absolute link to it is
    refused as any absolute link; reached by a relative link below a root on procfs, it is
    refused too (RESOLVE_NO_MAGICLINKS; the walk refuses its absolute-looking target)."""
    with open(secret) as f:
        root = Sysroot(f"/proc/{os.getpid()}")
        with pytest.raises(KhotuiError) as info:
            root.read_optional_text(f"/fd/{f.fileno()}")
    assert "loop" in info.value.message or "leads out" in info.value.message


# ---- what is not a regular file ---------------------------------------------------------------

def test_a_fifo_at_proc_iomem_does_not_hang_status(snap: Path, resolver: str) -> None:
    (snap / "proc/iomem").unlink()
    os.mkfifo(snap / "proc/iomem")
    result = run_cli("status", "--json", "--root", str(snap), walk=resolver == "walk")
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout)["errors"]["iomem"]
    assert f"{snap}/proc/iomem" in error and "FIFO" in error and "not one khotui wrote" in error


def test_a_fifo_at_proc_iomem_does_not_hang_snapshot(snap: Path, tmp_path: Path,
                                                    resolver: str) -> None:
    (snap / "proc/iomem").unlink()
    os.mkfifo(snap / "proc/iomem")
    out = tmp_path / "out"
    result = run_cli("snapshot", "--root", str(snap), str(out), walk=resolver == "walk")
    assert "Traceback" not in result.stderr
    assert not (out / "proc/iomem").exists()
    assert "proc/iomem" in result.stdout + result.stderr


@pytest.mark.parametrize("device", ["/dev/tty", "/dev/null"])
def test_a_link_to_a_device_is_refused_not_opened(snap: Path, device: str, resolver: str) -> None:
    _link(snap / "proc/cmdline", device)
    result = run_cli("status", "--json", "--root", str(snap), walk=resolver == "walk")
    error = json.loads(result.stdout)["errors"]["boot"]
    assert f"{snap}/proc/cmdline" in error and "leads out of the snapshot" in error


def test_a_relative_link_to_a_fifo_outside_is_refused_before_opening(snap: Path,
                                                                    tmp_path: Path) -> None:
    """Opening a FIFO without O_NONBLOCK waits for a writer: had the link been followed, this
    read would never return (and with O_NONBLOCK it would be the FIFO refusal, not this one)."""
    os.mkfifo(tmp_path / "pipe")
    _link(snap / "proc/iomem", "../../pipe")
    with time_limit(10), pytest.raises(KhotuiError, match="leads out of the snapshot"):
        Sysroot(snap).read_optional_text("/proc/iomem")


def _record_opens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    opened: list[tuple[str, int]] = []
    real = beneath.open_beneath

    def spy(rootfd: int, rel: str, flags: int) -> int:
        opened.append((rel, flags))
        return real(rootfd, rel, flags)
    monkeypatch.setattr("khotui.host.sysroot.open_beneath", spy)
    return opened


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")
def test_a_device_node_in_the_tree_is_refused_without_being_opened(
        snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot unpacked as root keeps device nodes: /dev/watchdog's open arms it. The type
    is read on an O_PATH descriptor (which opens nothing), so the device is never opened."""
    (snap / "proc/iomem").unlink()
    os.mknod(snap / "proc/iomem", 0o600 | stat.S_IFCHR, os.makedev(1, 3))   # /dev/null's numbers
    opened = _record_opens(monkeypatch)
    with pytest.raises(KhotuiError, match="character device") as info:
        Sysroot(snap).read_optional_text("/proc/iomem")
    assert info.value.path == f"{snap}/proc/iomem" and "not one khotui wrote" in str(info.value)
    assert opened and all(flags & os.O_PATH for rel, flags in opened if rel == "/proc/iomem")


def test_a_socket_in_the_tree_is_refused(snap: Path) -> None:
    import socket
    (snap / "proc/iomem").unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(snap / "proc/iomem"))
        with pytest.raises(KhotuiError, match="a socket"):
            Sysroot(snap).read_bytes("/proc/iomem")


def test_a_fifo_swapped_in_after_the_check_is_refused_not_waited_on(
        snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: a regular file when its type is read, a FIFO when it is opened for reading.
    O_NONBLOCK makes the open return at once, and the second fstat refuses it."""
    iomem = snap / "proc/iomem"
    real = beneath.open_beneath

    def swap(rootfd: int, rel: str, flags: int) -> int:
        if rel == "/proc/iomem" and not flags & os.O_PATH:
            iomem.unlink()
            os.mkfifo(iomem)
        return real(rootfd, rel, flags)
    monkeypatch.setattr("khotui.host.sysroot.open_beneath", swap)
    with time_limit(10), pytest.raises(KhotuiError, match="FIFO"):
        Sysroot(snap).read_optional_text("/proc/iomem")


# ---- links inside the tree, and the live host ------------------------------------------------------

def test_links_inside_the_tree_are_followed(snap: Path) -> None:
    (snap / "proc/cmdline.real").write_bytes((snap / "proc/cmdline").read_bytes())
    _link(snap / "proc/cmdline", "cmdline.real")
    _link(snap / "proc/version", "../sys/../proc/./cmdline.real")
    root = Sysroot(snap)
    assert read_boot(root).cmdline == read_boot(Sysroot(TWO)).cmdline
    assert root.read_text("/proc/version") == root.read_text("/proc/cmdline.real")


def test_a_linked_copy_reads_as_its_flattened_form(tmp_path: Path) -> None:
    if not TWO.is_dir():
        pytest.skip(f"{TWO} is missing")
    flat_root = copy_tree(TWO, tmp_path / "flat")
    flatten_sysfs_links(flat_root)
    linked_root = copy_tree(flat_root, tmp_path / "linked")
    assert add_sysfs_links(linked_root) > 0
    flat, linked = Sysroot(flat_root), Sysroot(linked_root)
    assert read_topology(linked).as_dict() == read_topology(flat).as_dict()
    assert ([b.as_dict() for b in read_memory_blocks(linked)]
            == [b.as_dict() for b in read_memory_blocks(flat)])
    assert block_runs(linked) == block_runs(flat)
    assert memory_node_ids(linked) == memory_node_ids(flat)
    # through a node's link into the block's directory and back out by its own link
    node = "/sys/devices/system/node/node1"
    block = next(n for n in linked.listdir(node) if n.startswith("memory"))
    assert linked.listdir(f"{node}/{block}") == linked.listdir(f"/sys/devices/system/memory/{block}")
    assert linked.read_attribute(f"{node}/{block}/node1/{block}/state") is not None


def test_the_live_root_follows_its_links(tmp_path: Path) -> None:
    """Root `/` (here reached by a link) is the live host: /proc/self is a link, followed."""
    os.symlink("/", tmp_path / "slash")
    for root in (Sysroot("/"), Sysroot(tmp_path / "slash")):
        assert root.is_live
        status = root.read_optional_text("/proc/self/status")
        assert status is not None and "Pid:" in status
        with open("/proc/cmdline", "rb") as f:
            assert root.read_bytes("/proc/cmdline") == f.read()


def test_the_live_root_refuses_a_fifo_too(tmp_path: Path) -> None:
    """On the live host links are followed, but a FIFO is still not waited on."""
    os.mkfifo(tmp_path / "pipe")
    with time_limit(10), pytest.raises(KhotuiError, match="FIFO"):
        Sysroot("/").read_bytes(str(tmp_path / "pipe"))


def test_the_readers_name_the_snapshot_file_and_keep_other_sources(snap: Path, secret: Path) -> None:
    """One refused file costs its own source only: the rest of the status still reads."""
    _link(snap / "proc/iomem", secret)
    result = run_cli("status", "--json", "--root", str(snap))
    assert SECRET not in result.stdout
    status = json.loads(result.stdout)
    assert set(status["errors"]) == {"iomem"} and "leads out" in status["errors"]["iomem"]
    assert status["kernel"]["release"]


def test_dot_dot_after_a_link_is_taken_from_the_links_target(tmp_path: Path) -> None:
    """As the kernel resolves it: `a/..` with a -> x/y is x, not the root (both resolvers)."""
    (tmp_path / "x/y").mkdir(parents=True)
    (tmp_path / "x/f").write_text("in x\n")
    (tmp_path / "f").write_text("at the root\n")
    os.symlink("x/y", tmp_path / "a")
    root = Sysroot(tmp_path)
    assert root.read_text("/a/../f") == "in x\n"
    assert root.listdir("/a/..") == ["f", "y"]


def test_the_entry_helpers_do_not_follow_the_last_link(snap: Path, secret: Path) -> None:
    """lstat/readlink/is_symlink look at a link itself (for the snapshot copier), its directory
    resolved beneath the root; stat follows it, and refuses it when it leads out."""
    _link(snap / "proc/cmdline", secret)
    root = Sysroot(snap)
    assert root.is_symlink("/proc/cmdline")
    assert root.readlink("/proc/cmdline") == str(secret)
    st = root.lstat("/proc/cmdline")
    assert st is not None and stat.S_ISLNK(st.st_mode)
    assert root.lstat("/proc/nothing") is None and not root.is_symlink("/proc/nothing")
    with pytest.raises(KhotuiError, match="leads out"):
        root.stat("/proc/cmdline")
    assert sorted(root.iter_names("/proc")) == root.listdir("/proc")
    assert list(root.iter_names("/proc/nothing")) == []


def test_a_block_directory_read_once_still_refuses_links_out_and_fifos(tmp_path: Path,
                                                                     secret: Path) -> None:
    """block_runs() opens each memoryN/ once and reads its attributes relative to it."""
    block = tmp_path / "root/sys/devices/system/memory/memory0"
    block.mkdir(parents=True)
    (block / "state").write_text("online\n")
    os.symlink("state", block / "online")                       # inside: followed
    os.symlink("../../../../../../secret", block / "removable")  # out: refused
    os.mkfifo(block / "valid_zones")                            # FIFO: refused, not waited on
    root = Sysroot(tmp_path / "root")
    with time_limit(10), root.open_dir("/sys/devices/system/memory/memory0") as d:
        assert d.names() == ["online", "removable", "state", "valid_zones"]
        assert d.attribute("state") == d.attribute("online") == "online\n"
        assert d.attribute("phys_index") is None
        with pytest.raises(KhotuiError, match="leads out"):
            d.attribute("removable")
        with pytest.raises(KhotuiError, match="FIFO"):
            d.attribute("valid_zones")
    errors: list[str] = []
    with time_limit(10):
        block_runs(root, on_error=lambda host, message: errors.append(f"{host}: {message}"))
    assert SECRET not in "".join(errors)
    assert any("removable" in e and "leads out" in e for e in errors)
    with root.open_dir("/sys/nothing") as d:
        assert d.names() == [] and d.attribute("state") is None
