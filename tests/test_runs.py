"""The run-folder contract in-process: typed status updates, resume truncation of metrics, runs on other
hosts, run names, and folders that concurrent processes build (first complete one wins)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from forgellm import atomic, config, procs, runs
from forgellm.errors import ConfigError, ForgeError


def test_status_update_accepts_only_fields() -> None:
    status = runs.RunStatus()
    status.update(state="running", step=3)
    assert (status.state, status.step) == ("running", 3)
    for bad in ("stpe", "is_alive", "extra"):
        with pytest.raises(TypeError, match=bad):
            status.update(**{bad: 1})


def test_resume_truncation_keeps_earlier_lines_as_written(tmp_path: Path) -> None:
    lines = [
        {"step": 0, "split": "val", "loss": 3.0, "ppl": 20.0},
        {"step": 1, "split": "train", "loss": 2.9, "future_key": "kept"},
        {"step": 2, "split": "probe", "score": 0.5},  # a kind this version does not read
        {"step": 3, "split": "train", "loss": 2.7},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4, "spl'  # torn by a kill
    (tmp_path / runs.METRICS_FILE).write_text(text)
    runs.truncate_metrics_after(tmp_path, 2)
    kept = [json.loads(line) for line in (tmp_path / runs.METRICS_FILE).read_text().splitlines()]
    assert kept == lines[:3]
    runs.truncate_metrics_after(tmp_path, -1)  # resumed with no checkpoint: everything is logged again
    assert (tmp_path / runs.METRICS_FILE).read_text() == ""


def test_a_run_on_another_host_is_not_called_dead(tmp_path: Path) -> None:
    status = runs.RunStatus(state="running", pid=os.getpid(), pid_start="not-this", host="rank0-elsewhere")
    runs.write_status(tmp_path, status)
    assert runs.summarize(tmp_path).state == "running"  # cannot be checked from here: shown as recorded
    status.update(host=socket.gethostname())
    runs.write_status(tmp_path, status)
    assert runs.summarize(tmp_path).state == runs.DEAD  # here, with another start time: not our trainer
    status.update(pid_start=procs.process_start_time(os.getpid()))
    runs.write_status(tmp_path, status)
    assert runs.summarize(tmp_path).state == "running"


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "x\\y", " "])
def test_run_name_must_be_a_plain_folder_name(name: str) -> None:
    with pytest.raises(ConfigError, match="run_name: must be a plain folder name"):
        config.from_dict({"run_name": name})


def test_a_named_run_folder_is_created_once(tmp_path: Path) -> None:
    first = runs.create_run_dir(tmp_path, "mine", "unused")
    with pytest.raises(ForgeError, match="already exists"):
        runs.create_run_dir(tmp_path, "mine", "unused")
    assert first == tmp_path / "mine" and [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_shared_folder_finished_first_by_another_process_is_kept(tmp_path: Path) -> None:
    """Two processes building the same model or data cache: the reader never sees it missing."""
    final = tmp_path / "built"
    with atomic.atomic_folder(final, replace_marker="done.json", keep_existing=True) as tmp:
        (tmp / "done.json").write_text("first")
        (tmp / "weights").write_text("first")
        # Another process completes the same folder while this one is still writing.
        other = tmp_path / ".other"
        other.mkdir()
        (other / "done.json").write_text("second")
        os.replace(other, final)
        inode = final.stat().st_ino
    assert final.stat().st_ino == inode and (final / "done.json").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["built"]  # the losing copy is gone


def test_a_replaceable_folder_needs_its_marker(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(ForgeError, match="not written by ForgeLLM"):
        with atomic.atomic_folder(mine, replace_marker="forgellm_fuse.json"):
            pytest.fail("must refuse before anything is written")
    (mine / "forgellm_fuse.json").write_text("{}")
    with atomic.atomic_folder(mine, replace_marker="forgellm_fuse.json") as tmp:
        (tmp / "forgellm_fuse.json").write_text('{"new": true}')
    assert json.loads((mine / "forgellm_fuse.json").read_text()) == {"new": True}


def test_read_metrics_skips_lines_of_any_shape(tmp_path: Path) -> None:
    """A hand-edited metrics line whose split is a list or a mapping is skipped, not a crash."""
    lines = [
        '{"split": [], "step": 1, "loss": 1.0}',
        '{"split": {}, "step": 2}',
        '{"step": 3, "split": "train", "loss": 2.5}',
    ]
    (tmp_path / runs.METRICS_FILE).write_text("\n".join(lines) + "\n")
    assert [(r.split, r.step, r.loss) for r in runs.read_metrics(tmp_path)] == [("train", 3, 2.5)]
