"""Atomic writes: the new content or the old, never half; the usual file permissions."""

from __future__ import annotations

import os

import pytest

from simam_paddle.io import atomic_write_json, atomic_write_text


def test_write_replaces_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_write_that_dies_halfway_keeps_the_old_file(tmp_path):
    from simam_paddle.io import _atomic

    path = tmp_path / "h.json"
    atomic_write_json(path, {"epoch": 1})

    def half_then_crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"epo')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _atomic(path, half_then_crash)
    assert path.read_text() == '{\n "epoch": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644
