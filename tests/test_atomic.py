"""``mmapp.atomic``: a write either replaces the whole file or leaves the old one, and leaves no
temporary file behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmapp.atomic import atomic_path, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": ')
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_writes_replace_the_file_with_ordinary_permissions_and_keep_the_extension(tmp_path) -> None:
    target = write_text(tmp_path / "sub" / "notes.md", "one")  # the folder is made
    write_text(target, "two")
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_path(tmp_path / "done.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # numpy would append .npy to any other name
    assert np.load(tmp_path / "done.npy").tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.npy", "sub"]
