"""The run lifecycle with real trainer processes (no mocks): one trainer per run folder, unique run
folders for concurrent starts, refusing to resume or stop the wrong process, kill -9 and resume,
fuse never replacing a user's folder, and readers that survive torn or old files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from helpers import PROJECT_ROOT, run_cli

from forgellm import config, launcher, procs, run_summary, runs
from forgellm.errors import ForgeError

# Small and fast: 64-token windows, 4 per batch, a report (and status update) every step, one
# validation batch, validation only at the start and the end.
FAST = [
    "max_seq_length=64", "batch_size=4", "steps_per_report=1", "warmup_steps=2",
    "val_batches=1", "steps_per_eval=100000",
]  # fmt: skip
LONG = ["iters=100000", "save_every=100000"]  # a trainer that runs until stopped


def train_args(out: Path, *overrides: str, cfg: str = "configs/cpt-tiny.yaml") -> list[str]:
    args = ["train", cfg]
    for item in [*FAST, f"output_dir={out}", *overrides]:
        args += ["--set", item]
    return args


def popen_cli(args: list[str], logs: Path) -> subprocess.Popen:
    """Start `python -m forgellm ARGS` with stdout/stderr going to files in `logs` (a pipe nobody reads
    would block a long trainer); read them back with `output`."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "forgellm", *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def output(logs: Path) -> tuple[str, str]:
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 60, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def first_line_run_dir(logs: Path, proc: subprocess.Popen) -> Path:
    """The run folder a `train CONFIG` process prints on its first stdout line."""
    wait_for(lambda: (logs / "stdout").read_text().endswith("\n"), "the run folder line", proc=proc)
    return Path(output(logs)[0].splitlines()[0])


def start_long_trainer(out: Path, logs: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """A trainer that runs until stopped; returns once its status says running at step >= 1."""
    proc = popen_cli(train_args(out, *LONG, *overrides), logs)
    try:
        run_dir = first_line_run_dir(logs, proc)
        wait_for(lambda: _running_at_step(run_dir, 1), "the trainer's first step", proc=proc)
    except BaseException:
        kill(proc)
        raise
    return proc, run_dir


def _running_at_step(run_dir: Path, step: int) -> bool:
    try:
        status = runs.read_status(run_dir)
    except Exception:
        return False
    return status.state == "running" and status.step >= step


def freeze_past_a_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 60) -> None:
    """SIGSTOP the trainer at a moment when it has logged steps after its latest checkpoint, so that a
    kill then loses those steps (the case resume must handle) deterministically."""
    deadline = time.monotonic() + timeout
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        steps = runs.checkpoint_steps(run_dir)
        if steps and runs.read_status(run_dir).step > steps[-1]:
            return
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.poll() is None and time.monotonic() < deadline, "no step past a checkpoint"
        time.sleep(0.05)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def train_steps(run_dir: Path) -> list[int]:
    return [r.step for r in runs.read_metrics(run_dir) if r.split == "train"]


def write_status(run_dir: Path, **fields: object) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.STATUS_FILE).write_text(json.dumps(fields))


# ---- starting ----------------------------------------------------------------------------------------


def test_two_starts_with_the_same_run_name_train_exactly_once(tiny_model: Path, tmp_path: Path) -> None:
    """Two `train` commands racing for one run_name: one trains the folder, the other is refused
    naming that folder, and the winner's metrics hold every step once."""
    out = tmp_path / "runs"
    procs_ = [popen_cli(train_args(out, "run_name=same", "iters=8"), tmp_path / f"p{i}") for i in range(2)]
    try:
        codes = [p.wait(timeout=120) for p in procs_]
    finally:
        for p in procs_:
            kill(p)
    assert sorted(c == 0 for c in codes) == [False, True], codes
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    run_dir = out / "same"
    assert output(tmp_path / f"p{winner}")[0].splitlines()[0] == str(run_dir)
    loser_out, loser_err = output(tmp_path / f"p{loser}")
    assert loser_out == ""  # refused before printing a run folder
    assert str(run_dir) in loser_err and "already exists" in loser_err and loser_err.startswith("error: ")
    assert sorted(p.name for p in out.iterdir()) == ["same"]
    assert train_steps(run_dir) == list(range(1, 9))
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == 8


def test_unnamed_runs_started_in_the_same_second_get_distinct_folders(tiny_model: Path, tmp_path: Path) -> None:
    """Runs without run_name never share a folder: the second of a second gets a `-2` suffix, each
    folder has its own config.yaml, and two trainers started together both complete."""
    out = tmp_path / "runs"
    cfg = config.load(PROJECT_ROOT / "configs/cpt-tiny.yaml", [f"output_dir={out}"])
    time.sleep(1 - time.time() % 1)  # at the start of a second, so both names get the same timestamp
    first, second = launcher.create_run(cfg), launcher.create_run(cfg)  # the same config object twice
    assert cfg.run_name is None  # not changed by create_run
    assert first != second and first.parent == second.parent == out
    assert second.name == f"{first.name}-2"
    for run_dir in (first, second):
        saved = config.load(run_dir / runs.CONFIG_FILE)
        assert saved.run_name == run_dir.name and Path(saved.output_dir) == out
        assert sorted(p.name for p in run_dir.iterdir()) == [runs.CONFIG_FILE]

    out2 = tmp_path / "together"
    procs_ = [popen_cli(train_args(out2, "iters=4"), tmp_path / f"p{i}") for i in range(2)]
    try:
        codes = [p.wait(timeout=120) for p in procs_]
    finally:
        for p in procs_:
            kill(p)
    assert codes == [0, 0], [output(tmp_path / f"p{i}")[1] for i in range(2)]
    dirs = [Path(output(tmp_path / f"p{i}")[0].splitlines()[0]) for i in range(2)]
    assert dirs[0] != dirs[1] and {d.parent for d in dirs} == {out2}
    assert sorted(p.name for p in out2.iterdir()) == sorted(d.name for d in dirs)
    for run_dir in dirs:
        assert runs.read_status(run_dir).state == "completed"
        assert train_steps(run_dir) == list(range(1, 5))


def test_train_run_dir_on_a_trained_folder_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """`train --run-dir` only starts a fresh folder; a trained one must be continued with --resume,
    and the refusal leaves the folder as it was."""
    run_dir = Path(run_cli(*train_args(tmp_path, "run_name=done", "iters=3")).stdout.splitlines()[0])
    before = (runs.read_status(run_dir).to_dict(), (run_dir / runs.METRICS_FILE).read_text())
    proc = run_cli("train", "--run-dir", str(run_dir), check=False, timeout=120)
    assert proc.returncode != 0
    assert "trained before" in proc.stderr and f"--resume {run_dir}" in proc.stderr
    assert (runs.read_status(run_dir).to_dict(), (run_dir / runs.METRICS_FILE).read_text()) == before


# ---- a live trainer ----------------------------------------------------------------------------------


def test_resume_of_a_live_run_is_refused_and_stop_stops_it(tiny_model: Path, tmp_path: Path) -> None:
    """`train --resume` on a run whose trainer is alive is refused naming its pid and `forgellm stop`,
    without touching its metrics or config; `forgellm stop --wait` then saves and stops it."""
    proc, run_dir = start_long_trainer(tmp_path / "runs", tmp_path / "trainer")
    try:
        config_before = (run_dir / runs.CONFIG_FILE).read_text()
        assert launcher.trainer_pid(run_dir) == proc.pid
        assert runs.summarize(run_dir).state == "running"
        step_before = runs.read_status(run_dir).step

        refused = run_cli("train", "--resume", str(run_dir), "--set", "iters=5", check=False, timeout=120)
        assert refused.returncode != 0
        assert f"pid {proc.pid}" in refused.stderr and "forgellm stop" in refused.stderr, refused.stderr
        assert (run_dir / runs.CONFIG_FILE).read_text() == config_before  # its --set was not applied

        # The live trainer was not disturbed: it keeps going, and its metrics were not truncated.
        wait_for(lambda: _running_at_step(run_dir, step_before + 5), "more steps", proc=proc)
        steps = train_steps(run_dir)
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= step_before + 5

        stopped = run_cli("stop", str(run_dir), "--wait", "30", check=False, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert str(proc.pid) in stopped.stdout
        assert proc.wait(timeout=30) == 0
    finally:
        kill(proc)
    status = runs.read_status(run_dir)
    assert status.state == "stopped" and "SIGTERM" in status.stop_reason and status.pid is None
    assert runs.checkpoint_steps(run_dir) == [status.step]
    assert train_steps(run_dir) == list(range(1, status.step + 1))
    assert launcher.trainer_pid(run_dir) is None
    assert run_cli("stop", str(run_dir), check=False).returncode != 0  # nothing left to stop


def test_a_stop_during_start_up_ends_in_a_saved_stopped_run(tmp_path: Path) -> None:
    """Stop pressed while the trainer still builds its model and prepares data (a fresh home: both
    take seconds) is heard: the run ends `stopped` with a checkpoint, not killed and shown dead."""
    logs = tmp_path / "trainer"
    env_home = {"FORGELLM_HOME": str(tmp_path / "fresh-home")}
    logs.mkdir()
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forgellm", *train_args(tmp_path / "runs", *LONG)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT,
            env={**os.environ, **env_home, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        run_dir = first_line_run_dir(logs, proc)
        wait_for(lambda: (run_dir / runs.STATUS_FILE).exists(), "status.json", proc=proc)
        assert not (tmp_path / "fresh-home" / "models" / "tiny" / "config.json").exists()  # still starting up
        assert runs.read_status(run_dir).state == "running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, output(logs)
    finally:
        kill(proc)
    status = runs.read_status(run_dir)
    assert status.state == "stopped" and "SIGTERM" in status.stop_reason
    assert runs.checkpoint_steps(run_dir) == [status.step] and status.step >= 1


def test_kill_9_shows_dead_and_resume_continues_from_the_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    """A trainer killed with SIGKILL is shown as `dead` (library, `runs` CLI and the tabs' summary,
    which says how to resume); `train --resume` continues after its last checkpoint and completes."""
    parent = tmp_path / "runs"
    proc, run_dir = start_long_trainer(parent, tmp_path / "trainer", "run_name=killed", "save_every=4", "keep_last=1")
    try:
        freeze_past_a_checkpoint(proc, run_dir)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        kill(proc)
    status = runs.read_status(run_dir)
    assert status.state == "running" and status.pid == proc.pid  # what the trainer last wrote
    checkpoint = runs.checkpoint_steps(run_dir)[-1]
    assert checkpoint % 4 == 0 and checkpoint < status.step <= max(train_steps(run_dir))  # steps past it were logged

    summary = runs.summarize(run_dir)
    assert summary.state == runs.DEAD and launcher.trainer_pid(run_dir) is None
    listing = run_cli("runs", "--dir", str(parent)).stdout.splitlines()
    assert len(listing) == 1
    assert listing[0].split()[:3] == ["killed", "dead", f"{status.step}/100000"], listing
    text = run_summary.status_summary(summary)
    assert "**dead**" in text and f"--resume {run_dir}" in text and f"checkpoint {checkpoint}" in text

    total = checkpoint + 5
    resumed = run_cli("train", "--resume", str(run_dir), "--set", f"iters={total}", timeout=120)
    assert resumed.stdout.splitlines()[0] == str(run_dir)
    status = runs.read_status(run_dir)
    assert status.state == "completed" and status.step == status.total_steps == total and status.pid is None
    assert runs.summarize(run_dir).state == "completed"
    steps = train_steps(run_dir)
    # Each step once: the steps logged after the checkpoint before the kill were dropped and redone.
    assert steps == list(range(1, total + 1)), Counter(steps).most_common(3)
    assert f"resumed from checkpoint {checkpoint}" in (run_dir / runs.LOG_FILE).read_text()


# ---- a recycled pid ----------------------------------------------------------------------------------


def _assert_not_a_trainer(run_dir: Path, decoy: subprocess.Popen) -> None:
    assert launcher.trainer_pid(run_dir) is None
    assert launcher.stop(run_dir) is False
    proc = run_cli("stop", str(run_dir), check=False)
    assert proc.returncode != 0 and "no trainer is running" in proc.stderr, proc.stderr
    time.sleep(0.3)  # a signal, had one been sent, has arrived by now
    assert decoy.poll() is None, "an unrelated process was signalled"


def test_a_recycled_pid_is_never_taken_for_the_trainer(tmp_path: Path) -> None:
    """status.json says running, but its pid now belongs to another process: the run shows as dead
    (or at least not as a trainer), and `forgellm stop` refuses instead of signalling that process."""
    # Its command line even contains "forgellm", so only the start time can tell it apart.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "forgellm"])
    plain = subprocess.Popen(["sleep", "60"])
    try:
        wait_for(lambda: procs.process_start_time(decoy.pid) is not None, "the decoy")
        assert "forgellm" in procs.cmdline(decoy.pid)

        no_start = tmp_path / "no_start"  # (a) an old status without a start time
        write_status(no_start, state="running", pid=decoy.pid, step=3, total_steps=10)
        wrong_start = tmp_path / "wrong_start"  # (b) the pid was reused by a later process
        write_status(wrong_start, state="running", pid=decoy.pid, pid_start="1", step=3, total_steps=10)
        for run_dir in (no_start, wrong_start):
            assert runs.summarize(run_dir).state == runs.DEAD
            _assert_not_a_trainer(run_dir, decoy)
            assert "state: dead" in run_cli("stop", str(run_dir), check=False).stderr

        # (c) the right pid and start time, but the process is not a ForgeLLM trainer.
        not_trainer = tmp_path / "not_trainer"
        plain_start = procs.process_start_time(plain.pid)
        write_status(not_trainer, state="running", pid=plain.pid, pid_start=plain_start, step=3)
        assert procs.same_process(plain.pid, procs.process_start_time(plain.pid))
        assert "forgellm" not in procs.cmdline(plain.pid)
        _assert_not_a_trainer(not_trainer, plain)
        assert decoy.poll() is None
    finally:
        for p in (decoy, plain):
            kill(p)


# ---- fuse --------------------------------------------------------------------------------------------


def test_fuse_never_replaces_a_users_folder(tiny_model: Path, tmp_path: Path) -> None:
    """`fuse --out` refuses an existing folder it did not write (leaving it intact), writes a new one,
    reuses its own output for the same checkpoint and replaces it for another checkpoint."""
    run_dir = Path(run_cli(*train_args(tmp_path / "runs", "fine_tune_type=lora", "iters=4", "save_every=2",
                                       "learning_rate=5e-3")).stdout.splitlines()[0])  # fmt: skip
    assert runs.checkpoint_steps(run_dir) == [2, 4]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes\n")
    refused = run_cli("fuse", str(run_dir), "--checkpoint", "latest", "--out", str(mine), check=False)
    assert refused.returncode != 0 and "not written by ForgeLLM" in refused.stderr, refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my own notes\n"

    fused = tmp_path / "dataset_like"
    run_cli("fuse", str(run_dir), "--checkpoint", "latest", "--out", str(fused))
    provenance = json.loads((fused / "forgellm_fuse.json").read_text())
    assert Path(provenance["checkpoint"]) == runs.checkpoint_dir(run_dir, 4).resolve()
    weights = fused / "model.safetensors"
    first = (weights.read_bytes(), weights.stat().st_mtime_ns)

    run_cli("fuse", str(run_dir), "--checkpoint", "latest", "--out", str(fused))  # same checkpoint again: fine
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == first

    run_cli("fuse", str(run_dir), "--checkpoint", "2", "--out", str(fused))  # another checkpoint: replaced
    provenance = json.loads((fused / "forgellm_fuse.json").read_text())
    assert Path(provenance["checkpoint"]) == runs.checkpoint_dir(run_dir, 2).resolve()
    assert weights.read_bytes() != first[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_like", "mine", "runs"]  # no temp leftovers


# ---- readers -----------------------------------------------------------------------------------------


def test_readers_survive_torn_corrupt_and_old_files(tmp_path: Path) -> None:
    """A half-written metrics line is skipped until complete, a corrupt status.json shows the run as
    `unknown` (still listed, `runs` still works), and an older status.json reads with defaults and
    keeps the keys this version does not know."""
    parent = tmp_path / "runs"
    torn = parent / "torn"
    write_status(torn, state="completed", step=2, total_steps=2)
    full = [{"step": 1, "split": "train", "loss": 2.5}, {"step": 2, "split": "train", "loss": 2.0}]
    half = '{"step": 3, "split": "train", "lo'
    (torn / runs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in full) + half)
    records = runs.read_metrics(torn)
    assert [(r.step, r.loss) for r in records] == [(1, 2.5), (2, 2.0)]
    with open(torn / runs.METRICS_FILE, "a") as f:
        f.write('ss": 1.5}\n')  # the writer finishes the line
    assert [(r.step, r.loss) for r in runs.read_metrics(torn)] == [(1, 2.5), (2, 2.0), (3, 1.5)]

    corrupt = parent / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / runs.STATUS_FILE).write_text('{"state": "runn')
    summary = runs.summarize(corrupt)
    assert summary.state == runs.UNKNOWN and "not valid JSON" in summary.status.error
    assert "No readable status" in run_summary.status_summary(summary)
    assert sorted(r.name for r in runs.list_runs(parent)) == ["corrupt", "torn"]
    listing = run_cli("runs", "--dir", str(parent))
    lines = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()}
    assert lines == {"corrupt": "unknown", "torn": "completed"}

    old = parent / "old"
    write_status(old, state="completed", step=5, legacy_key=1)
    status = runs.read_status(old)
    assert (status.state, status.step, status.pid, status.pid_start) == ("completed", 5, None, None)
    assert status.total_steps is None and status.started_at is None and status.best_val_loss is None
    assert status.extra == {"legacy_key": 1}
    data = status.to_dict()
    assert data["legacy_key"] == 1 and data["state"] == "completed" and "extra" not in data
    runs.write_status(old, status)  # written back, the unknown key survives
    assert json.loads((old / runs.STATUS_FILE).read_text())["legacy_key"] == 1
    assert runs.summarize(old).state == "completed"


def test_delete_run_removes_only_idle_run_folders_under_the_runs_folder(tmp_path: Path) -> None:
    """A finished run is deleted; a run whose folder lock a live process holds is refused and left intact;
    `..`, a path, a hidden name, a link and a folder that is not a run are refused whatever they point at."""
    parent = tmp_path / "runs"
    finished, held, plain = parent / "finished", parent / "held", parent / "not-a-run"
    for run_dir in (finished, held):
        (run_dir / runs.CHECKPOINTS).mkdir(parents=True)
        runs.write_status(run_dir, runs.RunStatus(state="completed", step=3))
        (run_dir / runs.METRICS_FILE).write_text('{"step": 1, "split": "train", "loss": 2.0}\n')
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    outside = tmp_path / "precious"
    outside.mkdir()
    runs.write_status(outside, runs.RunStatus(state="completed"))  # looks like a run, but is not under runs/
    (parent / "link").symlink_to(outside)

    assert launcher.delete_run(parent, "finished") == parent.resolve() / "finished"
    assert not finished.exists() and sorted(p.name for p in parent.iterdir()) == ["held", "link", "not-a-run"]

    holder = subprocess.Popen(  # a live process holding the folder's trainer lock, as a trainer does
        [sys.executable, "-c", "import sys, time; from forgellm import procs; "
         "lock = procs.FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(held / runs.LOCK_FILE)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            launcher.delete_run(parent, "held")
            raise AssertionError("a held run was deleted")
        except ForgeError as e:
            assert "being trained right now" in e.message
    finally:
        holder.kill()
        holder.wait()
    assert (held / runs.METRICS_FILE).is_file()

    for name, expected in [
        ("..", "is not a run name"),
        ("../precious", "is not a run name"),
        (str(outside), "is not a run name"),
        (".hidden", "is not a run name"),
        ("link", "is a link"),
        ("not-a-run", "not a run folder"),
        ("missing", "no such run"),
    ]:
        try:
            launcher.delete_run(parent, name)
            raise AssertionError(f"{name!r} was accepted")
        except ForgeError as e:
            assert expected in e.message, (name, e.message)
    assert (outside / runs.STATUS_FILE).is_file() and (plain / "notes.txt").read_text() == "mine"
    assert launcher.delete_run(parent, "held") and sorted(p.name for p in parent.iterdir()) == ["link", "not-a-run"]
