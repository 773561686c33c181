"""Atomic writes: a file is either what was there before or complete."""

import pytest

from pipeline.workspace import atomic_target, write_atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = write_atomic(tmp_path / "out" / "f.parquet", b"previous")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_target(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.parquet"]


def test_a_finished_write_replaces_the_file(tmp_path):
    path = write_atomic(tmp_path / "f.csv", b"previous")
    with atomic_target(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]
