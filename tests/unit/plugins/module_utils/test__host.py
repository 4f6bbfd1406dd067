"""_host: the collection's one bounded reader, and the managed-file helpers built on it."""

from __future__ import annotations

import os

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host


def test_reads_a_regular_file_up_to_its_limit(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert _host.read_bounded(str(path), 100) == b"x" * 100
    with pytest.raises(_host.NotReadable) as exc:
        _host.read_bounded(str(path), 99)
    assert exc.value.reason == "too_big" and exc.value.size == 100


def test_a_proc_file_is_read_in_chunks_whatever_its_size_says():
    # /proc files report size 0: the limit still holds on what is read
    assert os.stat("/proc/self/status").st_size == 0
    assert b"Name:" in _host.read_bounded("/proc/self/status", 1 << 20)
    with pytest.raises(_host.NotReadable) as exc:
        _host.read_bounded("/proc/self/status", 10)
    assert exc.value.reason == "too_big" and exc.value.size > 10


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_anything_but_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / kind
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)         # no writer: a blocking open would hang here
    else:
        path = "/dev/zero"      # endless: refused by type, not read
    with pytest.raises(_host.NotReadable) as exc:
        _host.read_bounded(str(path), 1024)
    assert exc.value.reason == kind


def test_a_symlink_is_followed_only_when_asked(tmp_path):
    (tmp_path / "real").write_text("data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert _host.read_bounded(str(tmp_path / "link"), 10) == b"data"
    with pytest.raises(_host.NotReadable) as exc:
        _host.read_bounded(str(tmp_path / "link"), 10, follow=False)
    assert exc.value.reason == "link"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(_host.NotReadable):
        _host.read_bounded(str(tmp_path / "dangling"), 10, follow=False)
    with pytest.raises(FileNotFoundError):
        _host.read_bounded(str(tmp_path / "missing"), 10)


def test_read_managed_messages(tmp_path):
    assert _host.read_managed(str(tmp_path / "missing")) is None
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(_host.HostFileError, match="is a symbolic link; the module writes only files it owns"):
        _host.read_managed(str(tmp_path / "link"))
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(_host.HostFileError, match=r"big is 11 bytes, more than the 10 a managed file may have"):
        _host.read_managed(str(tmp_path / "big"), limit=10)
    with pytest.raises(_host.HostFileError, match="exists and is not a regular file"):
        _host.read_managed(str(tmp_path))


def test_read_installed_lists_stale_files_and_remove_empty_dirs_keeps_the_admins(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "stale.py").write_text("old")
    wanted = [str(lib / "new.py")]
    assert _host.read_installed(wanted, str(lib)) == {str(lib / "new.py"): None, str(lib / "stale.py"): "old"}
    (tmp_path / "empty").mkdir()
    _host.remove_empty_dirs([str(tmp_path / "empty"), str(lib), str(tmp_path / "missing")])
    assert not (tmp_path / "empty").exists() and (lib / "stale.py").exists()


def test_remove_empty_dirs_takes_bytecode_caches_but_nothing_else(tmp_path):
    lib = tmp_path / "lib"
    (lib / "__pycache__").mkdir(parents=True)
    (lib / "__pycache__" / "_host.cpython-313.pyc").write_bytes(b"\x00")
    kept = tmp_path / "kept"
    (kept / "__pycache__").mkdir(parents=True)
    (kept / "__pycache__" / "notes.txt").write_text("the admin's")
    _host.remove_empty_dirs([str(lib), str(kept)])
    assert not lib.exists()
    assert (kept / "__pycache__" / "notes.txt").read_text() == "the admin's"


def test_boot_entry_point_writes_no_bytecode_beside_the_installed_code(tmp_path):
    text = _boot.entry_point("test", "_mps_exec", "exec_main", execute=True)
    assert text.index("sys.dont_write_bytecode = True") < text.index("from ")
