"""Publishing speed: ForgeLLM's fuse vs mlx-lm's, and ForgeLLM's push vs a bare `HfApi.upload_folder`.

    FORGELLM_HOME=/tmp/bench_home python bench/publish_bench.py                # SmolLM2-135M LoRA, 3 pairs each
    FORGELLM_HOME=/tmp/bench_home python bench/publish_bench.py --model tiny   # seconds, a smoke run

Set-up: one short LoRA run of --model (1 step), its checkpoint fused by both tools.

Fuse, in one process, alternating ABBA over --pairs pairs (so machine drift hits both alike):
- ForgeLLM: `forgellm.publish.fuse.fuse_run` into a new folder, *without* its round-trip check (timed
  apart below), i.e. load base + adapter, fuse, save, and make the folder durable (fsync, which mlx-lm
  does not do; its time is printed too: the weights' share runs while the tokenizer loads);
- mlx-lm: its own `mlx_lm fuse` command (`mlx_lm.fuse.main` with the same arguments a user types), into a
  new folder;
- then the round-trip check alone (`check_roundtrip`), which ForgeLLM adds after every fuse.
Push, to the local Hub-protocol server of the test suite (tests/hub_server.py, 127.0.0.1, plain LFS,
no Xet), alternating ABBA over --pairs pairs, each to a new repo, the same fused folder:
- ForgeLLM: `forgellm.publish.hub.push` (preflight included: whoami, repo info, card validation);
- bare: `HfApi.create_repo` + `HfApi.upload_folder` with the same allow-list of files.
Reported: the median of each side, the ratio of medians and every pair's ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "0"  # read by huggingface_hub at import: the local server is "online"
os.environ["HF_HUB_DISABLE_XET"] = "1"  # the local server speaks plain LFS
os.environ.setdefault("FORGELLM_HOME", "/tmp/bench_home")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import forgellm  # noqa: E402,F401 - loads OpenBLAS before mlx
from forgellm.publish import fuse as fuse_module  # noqa: E402

TOKEN = "hf_bench_token_0123456789"


def train_once(model: str, out: Path) -> Path:
    from helpers import run_cli

    args = ["train", "configs/cpt-tiny.yaml", "--set", f"model={model}", "--set", f"output_dir={out}"]
    for item in ["fine_tune_type=lora", "iters=1", "max_seq_length=128", "batch_size=1", "steps_per_eval=1"]:
        args += ["--set", item]
    return Path(run_cli(*args, timeout=1800).stdout.splitlines()[0])


FSYNC_TIMES: list[float] = []  # per ForgeLLM fuse: the time spent making the new folder durable


def forgellm_fuse(run_dir: Path, out: Path) -> float:
    from forgellm import atomic

    real_check, real_tree, real_files = fuse_module.check_roundtrip, atomic._fsync_tree, fuse_module.fsync_files
    spent = [0.0]

    def timed(real):
        def run(arg) -> None:
            tic = time.perf_counter()
            real(arg)
            spent[0] += time.perf_counter() - tic

        return run

    fuse_module.check_roundtrip = lambda *_a, **_k: None  # timed on its own
    atomic._fsync_tree, fuse_module.fsync_files = timed(real_tree), timed(real_files)
    try:
        tic = time.perf_counter()
        fuse_module.fuse_run(run_dir, out, "latest")
        FSYNC_TIMES.append(spent[0])
        return time.perf_counter() - tic
    finally:
        fuse_module.check_roundtrip, atomic._fsync_tree, fuse_module.fsync_files = real_check, real_tree, real_files


def mlx_lm_fuse(base: Path, checkpoint: Path, out: Path) -> float:
    from mlx_lm import fuse

    argv = sys.argv
    sys.argv = ["mlx_lm.fuse", "--model", str(base), "--adapter-path", str(checkpoint), "--save-path", str(out)]
    try:
        tic = time.perf_counter()
        fuse.main()
        return time.perf_counter() - tic
    finally:
        sys.argv = argv


def roundtrip_time(fused: Path, checkpoint: Path) -> float:
    tic = time.perf_counter()
    fuse_module.check_roundtrip(fused, checkpoint)
    return time.perf_counter() - tic


def forget(server) -> None:
    """Empty the server (repos and LFS objects), so every timed push sends every byte."""
    server.repos.clear()
    server.lfs.clear()


def forgellm_push(server, folder: Path, repo: str) -> float:
    from forgellm.publish import hub

    forget(server)
    tic = time.perf_counter()
    hub.push(folder, repo, token=TOKEN, endpoint=server.url, allow_failed_roundtrip=True)
    return time.perf_counter() - tic


def bare_push(server, folder: Path, repo: str) -> float:
    from huggingface_hub import HfApi

    from forgellm.publish import hub

    allow = [f.path for f in hub.model_files(folder)]
    forget(server)
    tic = time.perf_counter()
    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo(repo, private=True, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo, allow_patterns=allow)
    return time.perf_counter() - tic


def abba(pairs: int, a, b) -> tuple[list[float], list[float]]:
    times_a, times_b = [], []
    for i in range(pairs):
        order = [(a, times_a), (b, times_b)] if i % 2 == 0 else [(b, times_b), (a, times_a)]
        for run, times in order:
            times.append(run(i))
    return times_a, times_b


def show(label: str, ours: list[float], theirs: list[float], peer: str) -> None:
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    print(f"\n{label}: ForgeLLM {statistics.median(ours):.2f} s, {peer} {statistics.median(theirs):.2f} s (medians)")
    print(f"  ForgeLLM s: {', '.join(f'{t:.2f}' for t in ours)}")
    print(f"  {peer} s: {', '.join(f'{t:.2f}' for t in theirs)}")
    pairs = ", ".join(f"{r:.3f}" for r in ratios)
    medians = statistics.median(ours) / statistics.median(theirs)
    print(f"  time ratio ForgeLLM / {peer}: median of pairs {statistics.median(ratios):.3f} ({pairs})")
    print(f"  ratio of medians {medians:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()

    from hub_server import HubServer, User

    from forgellm import runs

    work = Path(tempfile.mkdtemp(prefix="publish_bench_", dir=os.environ["FORGELLM_HOME"]))
    run_dir = train_once(args.model, work / "runs")
    checkpoint = runs.resolve_checkpoint(run_dir, "latest")
    base = runs.base_model_of(checkpoint)
    print(f"model {args.model} ({base}), checkpoint {checkpoint}, load average {os.getloadavg()[0]:.2f}")

    forgellm_fuse(run_dir, work / "warm-ours")  # warm-up: files in the page cache, kernels compiled
    mlx_lm_fuse(base, checkpoint, work / "warm-mlx")
    ours, theirs = abba(
        args.pairs,
        lambda i: forgellm_fuse(run_dir, work / f"ours-{i}"),
        lambda i: mlx_lm_fuse(base, checkpoint, work / f"mlx-{i}"),
    )
    show("fuse (load, fuse, save)", ours, theirs, "mlx_lm fuse")
    fsyncs = FSYNC_TIMES[-args.pairs :]
    spent = ", ".join(f"{t:.2f}" for t in fsyncs)
    print(f"  fsync of the new folder (ForgeLLM only; the weights' share overlaps the tokenizer load): {spent} s")
    checks = [roundtrip_time(work / f"ours-{i}", checkpoint) for i in range(args.pairs)]
    print(f"  round-trip check, added after each ForgeLLM fuse: {', '.join(f'{t:.2f}' for t in checks)} s")

    folder = work / "ours-0"
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    with HubServer({TOKEN: User("bench")}) as server:
        forgellm_push(server, folder, "bench/warm")  # also writes the card into the folder, before timing
        ours, theirs = abba(
            args.pairs,
            lambda i: forgellm_push(server, folder, f"bench/ours-{i}"),
            lambda i: bare_push(server, folder, f"bench/bare-{i}"),
        )
        forget(server)
    show(f"push of {size / 1e6:,.0f} MB", ours, theirs, "HfApi.upload_folder")
    print(
        f"  throughput: ForgeLLM {size / 1e6 / statistics.median(ours):.0f} MB/s, "
        f"bare {size / 1e6 / statistics.median(theirs):.0f} MB/s"
    )


if __name__ == "__main__":
    main()
