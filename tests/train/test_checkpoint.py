import errno
import os

import pytest
import torch

from prodrec.train import (CheckpointWriteError, load_checkpoint, load_latest_checkpoint, previous_path,
                                      remove_checkpoint_temporaries, save_checkpoint)
from prodrec.utils import read_torch_file


def test_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    last = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(last, {"step": 1}, keep_previous=True)
    assert not previous_path(last).exists()
    save_checkpoint(last, {"step": 2}, keep_previous=True)
    assert previous_path(last) == tmp_path / "checkpoints" / "last.prev.pt"
    assert load_checkpoint(last)["step"] == 2 and load_checkpoint(previous_path(last))["step"] == 1
    save_checkpoint(tmp_path / "best.pt", {"step": 3})
    save_checkpoint(tmp_path / "best.pt", {"step": 4})
    assert not (tmp_path / "best.prev.pt").exists()
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.prev.pt", "last.pt"]


def test_latest_falls_back_to_the_previous_file(tmp_path):
    last = tmp_path / "last.pt"
    assert load_latest_checkpoint(last) == (None, None, [])
    save_checkpoint(last, {"step": 1}, keep_previous=True)
    save_checkpoint(last, {"step": 2}, keep_previous=True)
    used, payload, refused = load_latest_checkpoint(last)
    assert (used, payload["step"], refused) == (last, 2, [])
    last.write_bytes(last.read_bytes()[:100])
    used, payload, refused = load_latest_checkpoint(last)
    assert (used, payload["step"]) == (previous_path(last), 1)
    assert len(refused) == 1 and refused[0].startswith(f"{last} cannot be read") and "corrupt" in refused[0]
    previous_path(last).write_bytes(b"junk")
    assert load_latest_checkpoint(last)[:2] == (None, None) and len(load_latest_checkpoint(last)[2]) == 2


class _RunsCode:
    def __reduce__(self):
        return (os.remove, ("never-called",))


def test_a_file_with_code_or_of_another_kind_is_refused(tmp_path):
    torch.save({"format": "prodrec.checkpoint", "hook": _RunsCode()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="tensors and plain containers"):
        load_checkpoint(tmp_path / "code.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a prodrec training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_torch_file(tmp_path / "missing.pt")


def test_disk_full_is_named_and_the_old_file_stays(tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    save_checkpoint(last, {"step": 1}, keep_previous=True)
    before = last.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match=rf"the disk is full: cannot write checkpoint {last} \(\d+ bytes "
                                                   rf"free on the file system of {tmp_path}\); last.pt is unchanged"):
        save_checkpoint(last, {"step": 2}, keep_previous=True)
    assert last.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_other_write_errors_pass_through(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(os, "fsync", denied)
    with pytest.raises(PermissionError):
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_remove_temporaries_deletes_only_cut_short_writes(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("mine")
    assert remove_checkpoint_temporaries(tmp_path) == [tmp_path / ".last.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]
    assert remove_checkpoint_temporaries(tmp_path / "missing") == []
