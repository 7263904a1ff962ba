"""kill -9 of the trainer at random moments: does every run survive it?

    python bench/kill9_bench.py [--trials 20] [--iters 24] [--seed 0] [--second-stops 3] [--home DIR]
                                [--json FILE] [--keep]

A reference run of configs/cpt-tiny.yaml with small overrides (64-token windows, a report, status update
and checkpoint every step, validation every 4 steps, `keep_last: 2`, so checkpoints, the `best` link and
retention all happen often) trains straight to the end, keeping every checkpoint. Then each trial starts
the same run (`python -m forgellm train`, its own run_name) and SIGKILLs the trainer at a random moment,
of one of four kinds in turn:

- checkpoint write: after a random step, the moment a checkpoint's temporary folder appears (while the
  weights and optimizer state are written and fsynced, before the rename);
- start-up: a random moment between the run folder appearing and the reference run's first step
  (importing MLX, loading the model, preparing data, step 0's validation, step 1);
- training: after a random step (as status.json reports it) plus a random fraction of a step, so the kill
  lands in a step's compute, its report or its checkpoint, or in validation;
- anywhere: start-up in the share of trials that start-up takes of the reference run's time, else training.

After the kill: status.json and metrics.jsonl read; no folder named like a checkpoint is incomplete;
every whole checkpoint reads (both safetensors files, both JSON files, the step it names) and holds the
weights the reference saved at that step; `runs.resolve_checkpoint(run, "latest")` is the newest whole
one and mlx-lm loads it onto the base model (`mlx_lm.load(..., adapter_path=)`, finite logits); `best`,
if any, names a whole checkpoint. Then `python -m forgellm train --resume` to the end: it exits 0 as
completed, resumed from that latest checkpoint, every train step logged once with the reference's loss
(rel 1e-4, abs 1e-5) and validation the same, the reference's final checkpoints and `best` (retention
as in a straight run), and final weights equal to the reference's (within float tolerance). A trial
survives when every check passes. tests/test_faults.py runs three trials through `run_bench`.

Then `--second-stops` runs with steps of seconds (3 x 4 windows of 1024 tokens) are sent SIGTERM early in
step 2 and again once status.json says stopping: the seconds from the first signal to that marker and
from the second to the trainer's exit (stopped at step 1, checkpoint 1 kept, step 2 never finished).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from forgellm import runs  # noqa: E402
from forgellm.errors import ForgeError  # noqa: E402

MODES = ("checkpoint write", "start-up", "training", "anywhere")  # in turn
KEEP_LAST = 2
LOSS_TOLERANCE = {"rel": 1e-4, "abs": 1e-5}  # as tests/test_training.py's exact-resume test


def overrides(iters: int, out: Path) -> list[str]:
    """The trial run: small and fast, with checkpoints, the best link and retention at work every step."""
    return [
        "max_seq_length=64", "batch_size=4", "warmup_steps=2", "steps_per_report=1", "val_batches=1",
        "steps_per_eval=4", "save_every=1", f"keep_last={KEEP_LAST}", f"iters={iters}", f"output_dir={out}",
    ]  # fmt: skip


# ---- processes -----------------------------------------------------------------------------------------


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "FORGELLM_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def start_trainer(home: Path, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "forgellm", *args], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=ROOT, env=env_for(home),
        )  # fmt: skip


def train_args(run_name: str, iters: int, out: Path, *extra: str) -> list[str]:
    args = ["train", str(ROOT / "configs/cpt-tiny.yaml")]
    for item in [*overrides(iters, out), f"run_name={run_name}", *extra]:
        args += ["--set", item]
    return args


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll `condition`; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("the trainer made no progress")
        time.sleep(0.002)
    return True


def status_step(run_dir: Path) -> int:
    try:
        return runs.read_status(run_dir).step
    except ForgeError:  # never: status.json is replaced atomically
        return -1


# ---- the reference run ------------------------------------------------------------------------------


@dataclass
class Reference:
    run_dir: Path
    iters: int
    folder_s: float  # launch to the run folder's config.yaml
    first_step_s: float  # launch to step 1 in status.json
    end_s: float  # launch to exit
    train_losses: dict[int, float]
    val_losses: dict[int, float]
    best: int | None

    def expected_checkpoints(self) -> list[int]:
        """What a straight run with `keep_last` keeps: the last ones and the best."""
        steps = runs.checkpoint_steps(self.run_dir)
        return sorted(set(steps[-KEEP_LAST:]) | ({self.best} if self.best is not None else set()))


def losses(run_dir: Path, split: str) -> dict[int, float]:
    return {r.step: r.loss for r in runs.read_metrics(run_dir) if r.split == split}


def reference_run(home: Path, out: Path, iters: int) -> Reference:
    """The same run trained straight, keeping every checkpoint (retention changes no weight)."""
    run_dir = out / "reference"
    log = out / "reference.log"
    t0 = time.monotonic()
    proc = start_trainer(home, train_args("reference", iters, out, "keep_last=100000"), log)
    wait_until(lambda: (run_dir / runs.CONFIG_FILE).exists(), proc)
    folder_s = time.monotonic() - t0
    wait_until(lambda: status_step(run_dir) >= 1, proc)
    first_step_s = time.monotonic() - t0
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"the reference run failed:\n{log.read_text()[-3000:]}")
    end_s = time.monotonic() - t0
    status = runs.read_status(run_dir)
    assert status.state == "completed" and runs.checkpoint_steps(run_dir) == list(range(1, iters + 1)), status
    return Reference(
        run_dir, iters, folder_s, first_step_s, end_s, losses(run_dir, "train"), losses(run_dir, "val"),
        runs.best_step(run_dir),
    )  # fmt: skip


# ---- checks -------------------------------------------------------------------------------------------


def same_weights(a: Path, b: Path, rtol: float = 0.0, atol: float = 0.0) -> bool:
    import mlx.core as mx

    left, right = mx.load(str(a)), mx.load(str(b))
    if left.keys() != right.keys():
        return False
    return all(mx.allclose(left[k], right[k], rtol=rtol, atol=atol).item() for k in left)


def checkpoint_problems(folder: Path, step: int, reference: Reference) -> list[str]:
    """A whole checkpoint reads completely and holds what the reference saved at that step."""
    import mlx.core as mx

    try:
        state = json.loads((folder / runs.TRAINER_STATE_FILE).read_text())
        json.loads((folder / runs.ADAPTER_CONFIG_FILE).read_text())
        mx.load(str(folder / runs.OPTIMIZER_FILE))
        mx.load(str(folder / runs.ADAPTER_FILE))
    except (OSError, ValueError, RuntimeError) as e:
        return [f"checkpoint {step} does not read: {e}"]
    problems = []
    if state.get("step") != step:
        problems.append(f"checkpoint {step} says step {state.get('step')}")
    twin = runs.checkpoint_dir(reference.run_dir, step) / runs.ADAPTER_FILE
    if not same_weights(folder / runs.ADAPTER_FILE, twin):
        problems.append(f"checkpoint {step} differs from the reference's checkpoint {step}")
    return problems


def loads_with_mlx_lm(checkpoint: Path) -> str | None:
    """None when mlx-lm loads the checkpoint onto its base model and the logits are finite."""
    import mlx.core as mx
    from mlx_lm import load

    base = runs.read_adapter_config(checkpoint).get("model")
    try:
        model, _tokenizer = load(str(base), adapter_path=str(checkpoint))
        logits = model(mx.array([[1, 2, 3, 4]]))
    except Exception as e:  # any failure to load is what this check is for
        return f"mlx-lm cannot load {checkpoint}: {type(e).__name__}: {e}"
    return None if mx.isfinite(logits).all().item() else f"{checkpoint} gives non-finite logits"


def after_kill(run_dir: Path, reference: Reference) -> tuple[list[str], int | None, list[str]]:
    """Problems with what the kill left, the latest whole checkpoint, and the leftovers of interrupted writes."""
    problems: list[str] = []
    try:
        runs.read_status(run_dir)
        runs.read_metrics(run_dir)
    except ForgeError as e:
        problems.append(f"the run folder does not read: {e}")
    root = runs.checkpoints_dir(run_dir)
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    leftovers = [n for n in names if n.startswith(".")]
    for name in names:
        if name.isdigit() and not runs.is_complete_checkpoint(root / name):
            problems.append(f"checkpoints/{name} is named like a checkpoint but is incomplete")
    steps = runs.checkpoint_steps(run_dir)
    for step in steps:
        problems += checkpoint_problems(runs.checkpoint_dir(run_dir, step), step, reference)
    latest = None
    if steps:
        latest_dir = runs.resolve_checkpoint(run_dir, "latest")
        latest = int(latest_dir.name)
        if latest != steps[-1]:
            problems.append(f"'latest' resolves to {latest_dir.name}, not {steps[-1]}")
        problem = loads_with_mlx_lm(latest_dir)
        if problem:
            problems.append(problem)
    best = runs.best_step(run_dir)
    if best is not None and best not in steps:
        problems.append(f"checkpoints/best names {best}, which is not a whole checkpoint")
    return problems, latest, leftovers


def after_resume(run_dir: Path, reference: Reference, latest: int | None) -> tuple[list[str], float]:
    """Problems with the resumed run against the reference, and the largest loss difference."""
    problems = []
    status = runs.read_status(run_dir)
    if (status.state, status.step, status.pid) != ("completed", reference.iters, None):
        problems.append(f"resumed run ended {status.state} at step {status.step}: {status.error}")
    log = (run_dir / runs.LOG_FILE).read_text(errors="replace")
    said = f"resumed from checkpoint {latest}" if latest is not None else "no complete checkpoint yet"
    if said not in log:
        problems.append(f"the resume did not say '{said}'")
    train = [r.step for r in runs.read_metrics(run_dir) if r.split == "train"]
    if train != list(range(1, reference.iters + 1)):
        problems.append(f"train steps logged {train}, not each step once")
    worst = 0.0
    for split, expected in (("train", reference.train_losses), ("val", reference.val_losses)):
        got = losses(run_dir, split)
        if sorted(got) != sorted(expected):
            problems.append(f"{split} losses at steps {sorted(got)}, the reference at {sorted(expected)}")
            continue
        for step, loss in expected.items():
            worst = max(worst, abs(got[step] - loss))
            if abs(got[step] - loss) > LOSS_TOLERANCE["abs"] + LOSS_TOLERANCE["rel"] * abs(loss):
                problems.append(f"{split} loss at step {step}: {got[step]} vs the reference's {loss}")
    steps = runs.checkpoint_steps(run_dir)
    if steps != reference.expected_checkpoints() or runs.best_step(run_dir) != reference.best:
        problems.append(
            f"checkpoints {steps} best {runs.best_step(run_dir)}; a straight run keeps "
            f"{reference.expected_checkpoints()} best {reference.best}"
        )
    final, twin = (runs.checkpoint_dir(d, reference.iters) / runs.ADAPTER_FILE for d in (run_dir, reference.run_dir))
    if final.exists() and not same_weights(final, twin, rtol=1e-4, atol=1e-5):
        problems.append("the final weights differ from the reference's")
    return problems, worst


# ---- a trial ------------------------------------------------------------------------------------------


@dataclass
class Trial:
    index: int
    mode: str
    killed_after_s: float = 0.0
    killed_at_step: int = 0  # what status.json said
    state_after_kill: str = ""  # as the app shows it
    latest_checkpoint: int | None = None
    leftovers: list[str] = field(default_factory=list)  # temporary names an interrupted write left
    max_loss_diff: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return not self.problems

    def line(self) -> str:
        mid = f"; left behind: {', '.join(self.leftovers)}" if self.leftovers else ""
        verdict = "survived" if self.survived else "FAILED: " + "; ".join(self.problems)
        return (
            f"trial {self.index:2d} ({self.mode}): killed {self.killed_after_s:5.2f}s after launch at step "
            f"{self.killed_at_step} ({self.state_after_kill}), latest whole checkpoint {self.latest_checkpoint}{mid}; "
            f"resumed to the end, max |Δloss| {self.max_loss_diff:.1e}: {verdict}"
        )


Waiter = Callable[[subprocess.Popen], bool]


def kill_moment(mode: str, run_dir: Path, reference: Reference, rng: random.Random) -> Waiter:
    """A function that waits, in the trainer's life, for the moment this mode kills at (False: it ended first).

    Moments are placed by the trial's own progress (its step in status.json) plus a random fraction of a
    step, not by wall time alone: the machine's load changes how long a run takes from one trial to the next.
    """
    startup_s = reference.first_step_s - reference.folder_s
    step_s = (reference.end_s - reference.first_step_s) / reference.iters  # a step with its reports and saves
    if mode == "start-up" or mode == "anywhere" and rng.random() < startup_s / (reference.end_s - reference.folder_s):
        delay = rng.uniform(0, startup_s)

        def starting(proc: subprocess.Popen) -> bool:
            ok = wait_until(lambda: (run_dir / runs.CONFIG_FILE).exists(), proc)
            time.sleep(delay)
            return ok and proc.poll() is None

        return starting
    if mode in ("anywhere", "training"):
        after, delay = rng.randrange(1, reference.iters), rng.uniform(0, step_s)

        def training(proc: subprocess.Popen) -> bool:
            ok = wait_until(lambda: status_step(run_dir) >= after, proc)
            time.sleep(delay)
            return ok and proc.poll() is None

        return training
    after = rng.randrange(0, reference.iters - 1)
    root = runs.checkpoints_dir(run_dir)

    def writing() -> bool:
        try:
            return any(".tmp-" in entry.name for entry in os.scandir(root))
        except FileNotFoundError:
            return False

    def checkpoint_write(proc: subprocess.Popen) -> bool:
        return wait_until(lambda: status_step(run_dir) >= after, proc) and wait_until(writing, proc)

    return checkpoint_write


def run_trial(index: int, mode: str, home: Path, out: Path, reference: Reference, rng: random.Random) -> Trial:
    """Start, kill -9 at the mode's moment, check, resume, check. Retried when the run ended before the kill."""
    for attempt in range(5):
        name = f"trial-{index}" + (f"-{attempt}" if attempt else "")
        run_dir = out / name
        log = out / f"{name}.log"
        wait = kill_moment(mode, run_dir, reference, rng)
        t0 = time.monotonic()
        proc = start_trainer(home, train_args(name, reference.iters, out), log)
        try:
            in_time = wait(proc)
            if in_time:
                os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if in_time and code == -signal.SIGKILL:
            break
    else:
        raise RuntimeError(f"trial {index}: the run kept ending before the kill")
    trial = Trial(index, mode, round(time.monotonic() - t0, 3), status_step(run_dir), runs.summarize(run_dir).state)
    trial.problems, trial.latest_checkpoint, trial.leftovers = after_kill(run_dir, reference)
    if trial.state_after_kill == "running":  # dead, unknown (before status.json), or completed (while exiting)
        trial.problems.append("a killed run shows as running")
    resumed = subprocess.run(
        [sys.executable, "-m", "forgellm", "train", "--resume", str(run_dir)],
        capture_output=True, text=True, cwd=ROOT, env=env_for(home), timeout=600,
    )  # fmt: skip
    if resumed.returncode != 0:
        trial.problems.append(f"--resume exited {resumed.returncode}: {resumed.stderr.strip()[-500:]}")
    else:
        problems, trial.max_loss_diff = after_resume(run_dir, reference, trial.latest_checkpoint)
        trial.problems += problems
        final = runs.resolve_checkpoint(run_dir, "latest")
        problem = loads_with_mlx_lm(final)
        if problem:
            trial.problems.append(problem)
    return trial


def run_bench(home: Path, out: Path, trials: int, iters: int, seed: int, say: Callable[[str], None] = print) -> dict:
    """The reference run and `trials` kill -9 trials under `out` (the tiny model must be built in `home`)."""
    out.mkdir(parents=True, exist_ok=True)
    reference = reference_run(home, out, iters)
    say(
        f"reference: {iters} steps; run folder after {reference.folder_s:.1f}s, step 1 after "
        f"{reference.first_step_s:.1f}s, done after {reference.end_s:.1f}s; best checkpoint {reference.best}"
    )
    rng = random.Random(seed)
    results = []
    t0 = time.monotonic()
    for index in range(1, trials + 1):
        trial = run_trial(index, MODES[(index - 1) % len(MODES)], home, out, reference, rng)
        say(trial.line())
        results.append(trial)
    survived = sum(t.survived for t in results)
    mid_write = sum(any(".tmp-" in name for name in t.leftovers) for t in results)
    before_checkpoint = sum(t.latest_checkpoint is None for t in results)
    worst = max(t.max_loss_diff for t in results)
    say(
        f"{survived}/{len(results)} survived in {time.monotonic() - t0:.0f}s ({mid_write} killed mid-write of a "
        f"checkpoint, {before_checkpoint} before the first checkpoint; max |Δloss| after resume {worst:.1e})"
    )
    return {
        "survived": survived,
        "killed_mid_write": mid_write,
        "max_loss_diff": worst,
        "trials": [asdict(t) | {"survived": t.survived} for t in results],
        "reference": {"iters": iters, "end_s": reference.end_s, "best": reference.best},
    }


# ---- a second Stop during a long step -----------------------------------------------------------------

SLOW = ["max_seq_length=1024", "batch_size=4", "grad_accumulation_steps=3"]  # steps of seconds on a CPU


def second_stop(home: Path, out: Path, index: int) -> dict:
    """A run with long steps: SIGTERM early in step 2, and again once status.json says it is stopping.

    Returns the step time, the seconds from the first signal to the stopping marker and from the second
    to the trainer's exit, and whether it ended as it should (stopped at step 1, checkpoint 1 kept).
    """
    name = f"second-stop-{index}"
    run_dir = out / name
    args = ["train", str(ROOT / "configs/cpt-tiny.yaml")]
    for item in [*SLOW, "steps_per_report=1", "val_batches=1", "iters=100000", "steps_per_eval=100000",
                 "save_every=1", f"output_dir={out}", f"run_name={name}"]:  # fmt: skip
        args += ["--set", item]
    proc = start_trainer(home, args, out / f"{name}.log")
    try:
        wait_until(lambda: runs.read_status(run_dir).last_checkpoint == 1, proc)
        step_s = 3 * 4 * 1023 / runs.read_status(run_dir).tokens_per_sec
        first = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        wait_until(lambda: runs.read_status(run_dir).stopping_step == 2, proc)
        marked_s = time.monotonic() - first
        second = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
        ended_s = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()
    status = runs.read_status(run_dir)
    ok = code == 0 and (status.state, status.step) == ("stopped", 1) and runs.checkpoint_steps(run_dir) == [1]
    return {"step_s": step_s, "marked_s": marked_s, "ended_s": ended_s, "ok": ok}


# ---- main ---------------------------------------------------------------------------------------------


def build_tiny(home: Path) -> None:
    subprocess.run([sys.executable, "-m", "forgellm", "tiny"], check=True, cwd=ROOT, env=env_for(home),
                   stdout=subprocess.DEVNULL)  # fmt: skip


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--iters", type=int, default=24, help="steps of each run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--home", type=Path, help="FORGELLM_HOME to use (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--second-stops", type=int, default=3, help="long-step runs ended by a second Stop")
    ap.add_argument("--keep", action="store_true", help="keep the runs (and a temporary home)")
    args = ap.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="kill9_home_"))).resolve()
    out = home / "kill9-runs"
    if out.exists():
        shutil.rmtree(out)
    print(f"commit {commit()}, load average {os.getloadavg()[0]:.2f}, home {home}")
    try:
        result = measure(home, out, args)
    finally:
        if not args.keep:
            shutil.rmtree(out if args.home else home, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["survived"] == args.trials and all(s["ok"] for s in result["second_stops"]) else 1


def measure(home: Path, out: Path, args: argparse.Namespace) -> dict:
    build_tiny(home)
    result = run_bench(home, out, args.trials, args.iters, args.seed)
    result["second_stops"] = [second_stop(home, out, i) for i in range(1, args.second_stops + 1)]
    for i, stop in enumerate(result["second_stops"], 1):
        print(
            f"second Stop {i}: steps of {stop['step_s']:.1f}s; stopping marker {stop['marked_s']:.2f}s after the "
            f"first SIGTERM, exit {stop['ended_s']:.2f}s after the second: {'ok' if stop['ok'] else 'WRONG'}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return result | {"commit": commit(), "load_average_end": os.getloadavg()[0]}


if __name__ == "__main__":
    sys.exit(main())
