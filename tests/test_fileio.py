"""Outputs are atomic: a failure mid-write leaves nothing; existing outputs need force."""

from __future__ import annotations

import pytest

from edgeq import fileio
from edgeq.errors import OutputExistsError


def test_write_refuses_existing_without_force(tmp_path):
    p = tmp_path / "a.bin"
    fileio.write_bytes(p, b"one")
    with pytest.raises(OutputExistsError, match="--force"):
        fileio.write_bytes(p, b"two")
    fileio.write_bytes(p, b"two", force=True)
    assert p.read_bytes() == b"two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]


def test_output_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(RuntimeError), fileio.output_dir(out) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_output_dir_replaces_with_force(tmp_path):
    out = tmp_path / "pkg"
    with fileio.output_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with fileio.output_dir(out, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]
