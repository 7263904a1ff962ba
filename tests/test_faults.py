"""Faults with real processes and signals (no mocks): the trainer killed with SIGKILL at random moments,
the app killed while a run trains, two Starts of the same config at once, and a second Stop during a
step that takes long."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import PROJECT_ROOT, run_cli

from forgellm import choices, config, forms, launcher, paths, procs, run_summary, runs
from forgellm.errors import ForgeError

CPT_TINY = "configs/cpt-tiny.yaml"
# Small and fast: 64-token windows, a status update every step, one validation batch.
FAST = ["max_seq_length=64", "batch_size=4", "steps_per_report=1", "warmup_steps=2", "val_batches=1"]
LONG = ["iters=100000", "steps_per_eval=100000", "save_every=100000"]  # runs until stopped
SLOW = ["max_seq_length=1024", "batch_size=4", "grad_accumulation_steps=3"]  # steps of seconds on a CPU


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120, alive: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not procs.pid_alive(alive):
            raise AssertionError(f"process {alive} ended while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def step_of(run_dir: Path) -> int:
    return runs.read_status(run_dir).step


def running_at(run_dir: Path, step: int) -> bool:
    status = runs.read_status(run_dir)
    return status.state == "running" and status.step >= step


def end_trainer(run_dir: Path) -> None:
    """Stop a test's trainer if it still runs (SIGKILL if a Stop is not heard within a minute)."""
    pid = launcher.trainer_pid(run_dir)
    if pid is None:
        return
    launcher.stop(run_dir, wait_s=60)
    if procs.pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


# ---- kill -9 at random moments -----------------------------------------------------------------------


def load_kill9_bench() -> Any:
    """bench/kill9_bench.py as a module (bench/ is no package): the test runs the benchmark's own checks."""
    if "kill9_bench" in sys.modules:
        return sys.modules["kill9_bench"]
    spec = importlib.util.spec_from_file_location("kill9_bench", PROJECT_ROOT / "bench" / "kill9_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill9_bench"] = module  # before running it: its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_kill_9_at_random_moments_loses_nothing(tiny_model: Path, forgellm_home: Path, tmp_path: Path) -> None:
    """Three trials of bench/kill9_bench.py (during a checkpoint write, during start-up, during training):
    every whole checkpoint reads and mlx-lm loads the latest, nothing half-written is taken for a
    checkpoint, and `--resume` continues the reference run's loss curve and ends with its checkpoints."""
    bench = load_kill9_bench()
    said: list[str] = []
    result = bench.run_bench(forgellm_home, tmp_path / "kill9", trials=3, iters=12, seed=1, say=said.append)
    assert result["survived"] == 3, "\n".join(said)
    modes = [trial["mode"] for trial in result["trials"]]
    assert modes == list(bench.MODES[:3])


def test_resume_points_best_at_the_best_checkpoint_a_kill_left_unlinked(tiny_model: Path, tmp_path: Path) -> None:
    """A kill between writing a new best checkpoint and moving `best` leaves the link on the older one (and
    retention, which spares only the linked one, would delete the true best): resume puts it right."""
    args = ["train", CPT_TINY]
    for item in [*FAST, "iters=8", "steps_per_eval=4", "save_every=4", "keep_last=2", f"output_dir={tmp_path}"]:
        args += ["--set", item]
    run_dir = Path(run_cli(*args).stdout.splitlines()[0])
    assert runs.checkpoint_steps(run_dir) == [4, 8] and runs.best_step(run_dir) == 8  # validation keeps falling
    runs.best_link(run_dir).unlink()
    runs.best_link(run_dir).symlink_to("4")  # what the kill left: checkpoint 8 written, the link not moved yet
    status = runs.read_status(run_dir)
    best_loss = status.best_val_loss
    status.update(state="running", best_step=4, best_val_loss=best_loss + 1.0)
    runs.write_status(run_dir, status)

    run_cli("train", "--resume", str(run_dir))
    status = runs.read_status(run_dir)
    assert runs.best_step(run_dir) == 8 and status.best_step == 8 and status.best_val_loss == best_loss
    assert "checkpoints/best now points at checkpoint 8" in (run_dir / runs.LOG_FILE).read_text()


# ---- the app killed while a run trains ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy


class App:
    """`python app.py` on a free port of 127.0.0.1, in its own process group, with FORGELLM_HOME set."""

    def __init__(self, home: Path, log: Path):
        self.port = free_port()
        env = {**os.environ, "FORGELLM_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(self.port)], cwd=PROJECT_ROOT, env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.log = log
        wait_for(self._serves, "the app to serve", timeout=180, alive=self.proc.pid)

    def _serves(self) -> bool:
        try:
            OPENER.open(f"http://127.0.0.1:{self.port}/", timeout=5)
        except OSError:
            return False
        return True

    def call(self, api_name: str, *data: Any) -> list[Any]:
        """One event handler through Gradio's HTTP API (`/gradio_api/call/<api_name>`); its outputs."""
        base = f"http://127.0.0.1:{self.port}/gradio_api/call/{api_name}"
        request = urllib.request.Request(
            base, json.dumps({"data": list(data)}).encode(), {"Content-Type": "application/json"}
        )
        event_id = json.load(OPENER.open(request, timeout=60))["event_id"]
        stream = OPENER.open(f"{base}/{event_id}", timeout=120).read().decode()
        event = stream.split("event: ")[-1]
        assert event.startswith("complete"), f"{api_name}: {stream[-2000:]}\n{self.log.read_text()[-3000:]}"
        return json.loads(event.split("data: ", 1)[1])

    def end(self, how: signal.Signals) -> None:
        os.killpg(self.proc.pid, how)  # the app's whole process group, as a closed terminal would
        self.proc.wait(timeout=60)


def form_for(*overrides: str) -> list[Any]:
    """The Training form's values for configs/cpt-tiny.yaml with `overrides`, in the order `_start` takes."""
    return forms.form_values(config.load(PROJECT_ROOT / CPT_TINY, list(overrides)))


def shown_step(line: str) -> int:
    """The step in a status line: `**running** · step 12/100000 · ...`."""
    return int(line.split(" · step ", 1)[1].split("/", 1)[0])


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def assert_trains_on(run_dir: Path, pid: int) -> None:
    """The trainer `pid` still runs this run, and its step advances."""
    before = step_of(run_dir)
    wait_for(lambda: step_of(run_dir) >= before + 3, "the step to advance", alive=pid)
    assert runs.summarize(run_dir).state == "running" and launcher.trainer_pid(run_dir) == pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads parent pids from /proc")
def test_a_run_outlives_its_app_and_a_restarted_app_shows_and_stops_it(tiny_model: Path, tmp_path: Path) -> None:
    """Started from the app's Start; the app ended with SIGTERM (to its whole process group), then a second
    app killed with SIGKILL: the trainer trains on through both. Each restarted app shows the run live
    (running, step advancing), refuses to start its config a second time, and the third stops it."""
    home = Path(os.environ["FORGELLM_HOME"])
    form = form_for(*FAST, *LONG)
    apps: list[App] = []
    run_dir = None
    try:
        apps.append(App(home, tmp_path / "app1.log"))
        message, _run_update = apps[0].call("_start", CPT_TINY, *form)
        assert message.startswith("Started **"), message
        run_dir = paths.runs_dir() / message.split("**")[1]
        wait_for(lambda: running_at(run_dir, 1), "the first step")
        pid = runs.read_status(run_dir).pid
        assert parent_pid(pid) == apps[0].proc.pid  # the app's own child
        apps[0].end(signal.SIGTERM)
        assert_trains_on(run_dir, pid)

        apps.append(App(home, tmp_path / "app2.log"))
        lines = []
        for _ in range(2):  # live: the status line moves on
            before = step_of(run_dir)
            wait_for(lambda before=before: step_of(run_dir) > before, "a new step", alive=pid)
            lines.append(apps[1].call("_status", run_dir.name)[0])
        assert all(line.startswith("**running** · step ") for line in lines), lines
        assert shown_step(lines[1]) > shown_step(lines[0]), lines
        assert choices.running_run() == run_dir.name
        refused = apps[1].call("_start", CPT_TINY, *form)[0]
        assert f"already being trained as run {run_dir.name}" in refused, refused
        apps[1].proc.kill()  # kill -9 of the app alone
        apps[1].proc.wait(timeout=30)
        assert_trains_on(run_dir, pid)

        apps.append(App(home, tmp_path / "app3.log"))
        said = apps[2].call("_stop", run_dir.name)[0]
        assert said.startswith(f"Stop requested for **{run_dir.name}**"), said
        wait_for(lambda: not procs.pid_alive(pid), "the trainer to stop", timeout=60)
        apps[2].end(signal.SIGTERM)
    finally:
        for app in apps:
            if app.proc.poll() is None:
                app.proc.kill()
        if run_dir is not None:
            end_trainer(run_dir)
    status = runs.read_status(run_dir)
    assert status.state == "stopped" and status.stop_reason == "stopped by SIGTERM" and status.pid is None
    assert runs.checkpoint_steps(run_dir) == [status.step] and status.step > 6


# ---- two Starts at once ------------------------------------------------------------------------------


def start_twice(form: list[Any]) -> list[str]:
    """Press the Training tab's Start twice at the same moment (two tabs, or a double click)."""
    from forgellm.ui import training

    messages: list[str] = []
    barrier = threading.Barrier(2)

    def press() -> None:
        barrier.wait()
        messages.append(training._start(CPT_TINY, *form)[0])

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sorted(messages, key=lambda m: not m.startswith("Started"))


@pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request
def test_two_starts_of_the_same_config_at_once_train_it_once(tiny_model: Path) -> None:
    """Unnamed: the second Start is refused while the first run starts or runs, naming it, and allowed
    again once it ended. Named: the folder is created once and the second Start names the existing run."""
    before = {r.name for r in runs.list_runs(paths.runs_dir())}
    started: list[Path] = []
    try:
        form = form_for(*FAST, *LONG, "seed=11")
        first, second = start_twice(form)
        assert first.startswith("Started **"), (first, second)
        started.append(paths.runs_dir() / first.split("**")[1])
        assert f"already being trained as run {started[0].name}" in second and "change the seed" in second, second

        named = form_for(*FAST, *LONG, "seed=12", "run_name=twice")
        first_named, second_named = start_twice(named)
        assert first_named.startswith("Started **twice**"), (first_named, second_named)
        started.append(paths.runs_dir() / "twice")
        assert "a run already exists in this folder" in second_named, second_named

        assert {r.name for r in runs.list_runs(paths.runs_dir())} - before == {p.name for p in started}
        wait_for(lambda: all(running_at(run_dir, 2) for run_dir in started), "both runs to train")
        for run_dir in started:
            assert launcher.stop(run_dir, wait_s=60)
            assert runs.read_status(run_dir).state == "stopped"
            steps = [r.step for r in runs.read_metrics(run_dir) if r.split == "train"]
            assert steps == list(range(1, len(steps) + 1))  # one trainer wrote it: every step once
        launcher.refuse_duplicate_start(config.load(PROJECT_ROOT / CPT_TINY, [*FAST, *LONG, "seed=11"]))  # ended
    finally:
        for run_dir in started:
            end_trainer(run_dir)


# ---- a second Stop during a long step ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_second_stop_ends_a_long_step_at_once_keeping_the_last_checkpoint(tiny_model: Path) -> None:
    """Steps of 3 x 4 windows of 1024 tokens (seconds each on a CPU, nearly all inside MLX). The app's
    first Stop: status.json says stopping at once and the status line shows "stopping: finishing step 2";
    a double click is not a second Stop; the second Stop ends the trainer within seconds, recorded stopped
    at step 1 with checkpoint 1 whole and loadable, step 2 never finished."""
    from forgellm.ui import training

    cfg = config.load(PROJECT_ROOT / CPT_TINY, [*SLOW, "steps_per_report=1", "val_batches=1", *LONG, "save_every=1"])
    launched = launcher.start_in_background(cfg)
    run_dir, proc = launched.run_dir, launched.process
    try:
        wait_for(lambda: runs.read_status(run_dir).last_checkpoint == 1, "checkpoint 1", timeout=300, alive=proc.pid)
        status = runs.read_status(run_dir)
        assert status.step == 1  # now inside step 2
        if 3 * 4 * 1023 / status.tokens_per_sec < 3 * launcher.REPEATED_STOP_S:
            pytest.skip(f"a step takes under {3 * launcher.REPEATED_STOP_S:g}s here (a GPU?): too short to test")
        said = training._stop(run_dir.name)
        assert said.startswith(f"Stop requested for **{run_dir.name}**") and "Press Stop again" in said, said
        wait_for(lambda: runs.read_status(run_dir).stopping_step == 2, "the stopping marker", timeout=10)
        line = training._status(run_dir.name)
        assert line.startswith("**stopping**: finishing step 2") and "Stop again ends it now" in line, line
        assert "Stop was just requested" in training._stop(run_dir.name)  # a double click: not sent again
        assert proc.poll() is None and runs.read_status(run_dir).step == 1  # still finishing step 2

        time.sleep(launcher.REPEATED_STOP_S)
        sent = time.monotonic()
        said = training._stop(run_dir.name)
        assert said.startswith(f"Second Stop for **{run_dir.name}**"), said
        assert proc.wait(timeout=10) == 0
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 5, f"the trainer took {took:.1f}s to end after the second Stop"
    status = runs.read_status(run_dir)
    assert (status.state, status.step, status.last_checkpoint, status.pid) == ("stopped", 1, 1, None), status
    assert status.stop_reason.startswith("stopped at once by a second SIGTERM: step 2 was not finished")
    assert status.stopping_step is None and runs.summarize(run_dir).state == "stopped"
    assert "stopped because: stopped at once" in run_summary.status_summary(runs.summarize(run_dir))
    assert runs.checkpoint_steps(run_dir) == [1] and 2 not in [r.step for r in runs.read_metrics(run_dir)]
    checkpoint = runs.resolve_checkpoint(run_dir, "latest")
    assert json.loads((checkpoint / runs.TRAINER_STATE_FILE).read_text())["step"] == 1
    bench = load_kill9_bench()
    assert bench.loads_with_mlx_lm(checkpoint) is None


def test_a_second_signal_during_start_up_records_the_run_stopped(tiny_model: Path, tmp_path: Path) -> None:
    """Two Ctrl+C (SIGINT) before the first step: the trainer ends at once as stopped at step 0, not
    failed, and says that a resume starts over; a signal to a trainer with nothing recorded yet is no
    error either."""
    cfg = config.load(PROJECT_ROOT / CPT_TINY, [*FAST, *LONG, f"output_dir={tmp_path}"])
    launched = launcher.start_in_background(cfg)
    run_dir, proc = launched.run_dir, launched.process
    try:
        wait_for(lambda: runs.read_status(run_dir).state == "running", "status running", alive=proc.pid)
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: runs.read_status(run_dir).stopping_step == 1, "the stopping marker", timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    status = runs.read_status(run_dir)
    if status.step == 0:  # the usual case: start-up (model load, data) outlasts the two signals
        assert status.stop_reason == "stopped at once by a second SIGINT: step 1 was not finished; " + (
            "no checkpoint yet: resume starts over"
        )
    assert status.state == "stopped" and status.pid is None


def test_a_start_is_refused_while_a_run_of_the_same_config_runs(tmp_path: Path) -> None:
    """What a restarted app sees on disk: a live run (here: this process, recorded as its trainer) of the
    same config refuses an unnamed start of it; a named start is left to the run folder's uniqueness."""
    cfg = config.load(PROJECT_ROOT / CPT_TINY, [f"output_dir={tmp_path}"])
    run_dir = tmp_path / "twin"
    run_dir.mkdir()
    (run_dir / runs.CONFIG_FILE).write_text(config.dump_yaml(cfg))
    me = procs.process_start_time(os.getpid())
    runs.write_status(run_dir, runs.RunStatus(state="running", pid=os.getpid(), pid_start=me))
    with pytest.raises(ForgeError, match="already being trained as run twin"):
        launcher.refuse_duplicate_start(cfg)
    launcher.refuse_duplicate_start(config.load(PROJECT_ROOT / CPT_TINY, [f"output_dir={tmp_path}", "seed=1"]))
    launcher.refuse_duplicate_start(config.load(PROJECT_ROOT / CPT_TINY, [f"output_dir={tmp_path}", "run_name=b"]))
