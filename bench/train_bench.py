"""ForgeLLM's trainer vs `python -m mlx_lm lora` (the raw peer): tokens/s and peak RSS, same everything.

    python bench/train_bench.py                          # tiny + smollm2-135m-instruct, lora / full / full-blocks
    python bench/train_bench.py --models tiny            # quicker
    python bench/train_bench.py --models tiny --blas-threads --stock-peer   # extras, see below
    python bench/train_bench.py --overhead-only          # only the metrics/status writing micro-benchmark

Method (no parsing of either tool's console output). Both tools train the same model on the same
token windows with the same hyperparameters (Adam with bias correction, which ForgeLLM always uses
and mlx-lm gets from a `-c` config file, see `mlx_lm_config`; constant LR, no clipping, no warmup, LoRA
rank 8 / scale 20 on every block's default keys, or full fine-tuning), evaluation and checkpointing effectively
off (steps_per_eval / save_every 100000, one validation batch). Each tool runs twice, with N1 and N2
iterations, as a child of this script; steady-state tokens/s = (N2 - N1) * targets_per_step / (T2 - T1)
from wall time, which cancels start-up, model loading, compilation, the two one-batch evaluations and
the final save. Peak RSS is the child's own ru_maxrss (os.wait4), the larger of its two runs.

Data: ForgeLLM's pipeline (`forgellm.data.prepare`) makes fixed windows of max_seq_length + 1 tokens
from dataset/beekeeping; mlx-lm gets the same windows decoded to `{"text": ...}` JSONL (train.jsonl and
valid.jsonl). mlx-lm re-encodes each window and appends EOS, and its `--max-seq-length` caps the whole
row (inputs are row[:-1]), so it is given max_seq_length + 1: both then run (B, L) inputs and train
B * L targets per step. The token counts each side trains per step are computed from mlx-lm's own
`iterate_batches` over the JSONL (in a helper child) and printed.

BLAS: `import forgellm` loads OpenBLAS into MLX's Linux CPU build; plain `python -m mlx_lm lora` keeps
MLX's bundled reference BLAS (31.7x slower matmuls, blas_bench.py), which would compare BLAS libraries, not trainers.
So the peer runs as `python -c "import forgellm; <run mlx_lm's CLI>" lora ...` (OpenBLAS loaded, no
other ForgeLLM code involved). `--stock-peer` also times the unmodified `python -m mlx_lm lora` (tiny
model only: SmolLM2 on the reference BLAS takes minutes per step).

Shared CPU: before every timed run this waits until the 1-minute load average is below --max-load
(polling every 10 s, at most --max-wait seconds) and records the load at the start of the run.

Extras: `--blas-threads` times ForgeLLM on the tiny CPT case (full, num_layers -1) with
OPENBLAS_NUM_THREADS=1 vs unset. The metrics/status micro-benchmark (1000 x RunWriter.log_metrics +
set_status, what one train report costs) always runs and is related to each case's ForgeLLM step time.
Prints Markdown tables and writes every figure to --json (default bench/train_bench.json is NOT written
unless asked: pass --json PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
os.environ.setdefault("FORGELLM_HOME", "/tmp/bench_home")

# Runs mlx-lm's own CLI (`python -m mlx_lm ...`) after `import forgellm` has loaded OpenBLAS.
PEER_LAUNCHER = (
    "import sys, runpy, forgellm; from forgellm.platform import ensure_fast_blas; "
    "s = ensure_fast_blas(); print('peer BLAS:', s.name, s.library, file=sys.stderr, flush=True); "
    "sys.argv = ['mlx_lm', *sys.argv[1:]]; runpy.run_module('mlx_lm', run_name='__main__', alter_sys=True)"
)

MODELS = {
    # name: (layers, max_seq_length, N1, N2, learning rate)
    "tiny": dict(layers=4, seq=256, n1=20, n2=220, lr=1e-4),
    "smollm2-135m-instruct": dict(layers=30, seq=256, n1=2, n2=10, lr=1e-4),
}


# ------------------------------------------------------------------------------------------------
# Shared helpers (also used by useful_tokens_bench.py)


def wait_for_quiet(max_load: float = 0.8, max_wait: float = 600.0, poll: float = 10.0) -> dict:
    """Block until the 1-minute load average is below `max_load` (or `max_wait` s passed)."""
    start = time.monotonic()
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() - start < max_wait:
        time.sleep(poll)
        load = os.getloadavg()[0]
    waited = time.monotonic() - start
    return {"load1": round(load, 2), "waited_s": round(waited), "quiet": load < max_load}


@dataclass
class ChildRun:
    wall_s: float
    maxrss_mb: float
    rc: int
    log: Path
    load: dict = field(default_factory=dict)


def run_child(
    argv: list[str],
    log: Path,
    env: dict | None = None,
    cwd: Path = ROOT,
    max_load: float = 0.8,
    max_wait: float = 600.0,
) -> ChildRun:
    """Wait for a quiet CPU, run `argv` to completion; wall time and the child's own peak RSS."""
    load = wait_for_quiet(max_load, max_wait)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = ChildRun(wall, usage.ru_maxrss / 1024, proc.returncode, log, load)
    if run.rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"child failed (rc {run.rc}): {' '.join(argv)}\n--- {log} ---\n{tail}")
    return run


def forgellm_argv(
    model: str,
    data: Path,
    out_dir: Path,
    run_name: str,
    *,
    fine_tune_type: str,
    num_layers: int,
    batch: int,
    iters: int,
    seq: int,
    lr: float,
    extra: list[str] | None = None,
) -> list[str]:
    sets = {
        "model": model,
        "data": str(data),
        "train_type": "cpt",
        "fine_tune_type": fine_tune_type,
        "num_layers": num_layers,
        "batch_size": batch,
        "iters": iters,
        "max_seq_length": seq,
        "steps_per_eval": 100000,
        "val_batches": 1,
        "save_every": 100000,
        "keep_last": 1,
        "steps_per_report": 10,
        "warmup_steps": 0,
        "max_grad_norm": "null",
        "optimizer": "adam",
        "lr_schedule": "constant",
        "learning_rate": lr,
        "min_learning_rate": 0,
        "weight_decay": 0,
        "grad_accumulation_steps": 1,
        "seed": 0,
        "lora_parameters.rank": 8,
        "lora_parameters.scale": 20.0,
        "lora_parameters.dropout": 0.0,
        "output_dir": str(out_dir),
        "run_name": run_name,
    }
    argv = [PY, "-m", "forgellm", "train", str(ROOT / "configs" / "cpt-tiny.yaml")]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv + (extra or [])


# ForgeLLM's Adam always has bias correction (forgellm/training/loop.py build_optimizer); MLX's default is
# off, and mlx-lm's CLI sets optimizer options only from a config file. Without this the two tools would
# run different update rules.
MLX_LM_ADAM_CONFIG = "optimizer_config:\n  adam:\n    bias_correction: true\n"


def mlx_lm_config(folder: Path) -> Path:
    """The `mlx_lm lora -c` file that gives mlx-lm's Adam the bias correction ForgeLLM's has."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlx_lm_adam.yaml"
    path.write_text(MLX_LM_ADAM_CONFIG)
    return path


def mlx_lm_argv(
    model_path: Path,
    data_dir: Path,
    adapter_dir: Path,
    *,
    fine_tune_type: str,
    num_layers: int,
    batch: int,
    iters: int,
    seq: int,
    lr: float,
    stock: bool = False,
) -> list[str]:
    head = [PY, "-m", "mlx_lm"] if stock else [PY, "-c", PEER_LAUNCHER]
    return [
        *head,
        "lora",
        "--model",
        str(model_path),
        "--train",
        "--data",
        str(data_dir),
        "--fine-tune-type",
        fine_tune_type,
        "--num-layers",
        str(num_layers),
        "--batch-size",
        str(batch),
        "--iters",
        str(iters),
        "--max-seq-length",
        str(seq),
        "--steps-per-eval",
        "100000",
        "--val-batches",
        "1",
        "--save-every",
        "100000",
        "--steps-per-report",
        "10",
        "--adapter-path",
        str(adapter_dir),
        "--learning-rate",
        str(lr),
        "--optimizer",
        "adam",
        "--seed",
        "0",
        "-c",
        str(mlx_lm_config(adapter_dir.parent)),
    ]


def ensure_models(names: list[str]) -> dict[str, Path]:
    home = Path(os.environ["FORGELLM_HOME"])
    paths = {n: home / "models" / n for n in names}
    if not all((p / "config.json").is_file() for p in paths.values()):
        subprocess.run(
            [PY, "-m", "forgellm", "tiny", "--all"], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
    return paths


def steady(n1: int, n2: int, t1: float, t2: float, tokens_per_step: float) -> dict:
    dt = t2 - t1
    return {"step_s": dt / (n2 - n1), "tokens_per_s": (n2 - n1) * tokens_per_step / dt if dt > 0 else float("nan")}


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def forgellm_metrics_tokens_per_s(run_dir: Path) -> float | None:
    """Mean in-loop tokens/s ForgeLLM itself logged (skipping the first report, which includes compiling)."""
    sys.path.insert(0, str(ROOT))
    from forgellm import runs

    vals = [r.tokens_per_sec for r in runs.read_metrics(run_dir) if isinstance(r, runs.TrainRecord)]
    vals = vals[1:-1] or vals  # the last window may be partial
    return statistics.mean(vals) if vals else None


# ------------------------------------------------------------------------------------------------
# Helper child: prepare windows, write mlx-lm's JSONL, count what mlx-lm trains per step

PREP_CHILD = r"""
import json, sys
import numpy as np
import forgellm
from transformers import AutoTokenizer
from forgellm.config import from_dict
from forgellm.data import prepare
import mlx.core as mx
from mlx_lm.tuner.datasets import TextDataset, CacheDataset
from mlx_lm.tuner.trainer import iterate_batches

a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["model_path"])
cfg = from_dict({"model": a["model"], "data": a["data"], "max_seq_length": a["seq"], "train_type": "cpt"})
p = prepare(cfg, tok)
out = {"forgellm": {"train_rows": p.train.rows, "val_rows": p.val.rows, "row_tokens": int(p.train.tokens.shape[1]),
       "targets_per_row": int(p.train.tokens.shape[1]) - 1, "yield": p.report["yield"]}}
diffs = []
for split, name in ((p.train, "train"), (p.val, "valid")):
    with open(a["out_dir"] + f"/{name}.jsonl", "w") as f:
        for row in split.tokens:
            # row[:-1]: mlx-lm appends EOS, so it trains on the same 256 inputs (only the last target differs)
            # and never hits its "longer than max_seq_length" warning, printed once per batch.
            text = tok.decode(row[:-1].tolist(), skip_special_tokens=False)
            f.write(json.dumps({"text": text}) + "\n")
            if name == "train":
                diffs.append(len(tok.encode(text)) - (len(row) - 1))
rows = [json.loads(l) for l in open(a["out_dir"] + "/train.jsonl")]
ds = CacheDataset(TextDataset(rows, tok))
real, counted, widths = [], [], []
for batch, lengths in iterate_batches(ds, a["batch"], a["mlx_seq"], loop=False):
    b = np.array(batch); ln = np.array(lengths)
    real.append(int((np.minimum(ln[:, 1], b.shape[1]) - 1).sum()))
    steps = np.arange(1, b.shape[1])
    counted.append(int(((steps[None] >= ln[:, :1]) & (steps[None] <= ln[:, 1:])).sum()))
    widths.append(int(b.shape[1]))
d = np.array(diffs)
out["mlx_lm"] = {"rows": len(rows),
                 "reencode_len_diff": {"min": int(d.min()), "max": int(d.max()), "mean": float(d.mean()),
                                       "exact_fraction": float((d == 0).mean())},
                 "batches_per_epoch": len(real), "trained_targets_per_step": float(np.mean(real)),
                 "trained_targets_per_step_min": int(min(real)), "counted_tokens_per_step": float(np.mean(counted)),
                 "batch_width": sorted(set(widths))}
print("PREP_JSON " + json.dumps(out))
"""


def prep_child(
    code: str,
    model: str,
    model_path: Path,
    seq: int,
    batch: int,
    out_dir: Path,
    data: Path = ROOT / "dataset" / "beekeeping",
    extra: dict | None = None,
) -> dict:
    """Run a data-preparation child script (`code`, which prints one `PREP_JSON {...}` line) and parse it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = {
        "model": model,
        "model_path": str(model_path),
        "data": str(data),
        "seq": seq,
        "mlx_seq": seq + 1,
        "batch": batch,
        "out_dir": str(out_dir),
        **(extra or {}),
    }
    res = subprocess.run(
        [PY, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if res.returncode:
        raise SystemExit(f"data preparation failed:\n{res.stderr[-4000:]}")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("PREP_JSON "))
    return json.loads(line[len("PREP_JSON ") :])


def prepare_data(model: str, model_path: Path, seq: int, batch: int, out_dir: Path) -> dict:
    return prep_child(PREP_CHILD, model, model_path, seq, batch, out_dir)


# ------------------------------------------------------------------------------------------------
# Metrics/status writing micro-benchmark


def writer_overhead(folder: Path, calls: int = 1000) -> dict:
    """Seconds per train report: RunWriter.log_metrics(record) + set_status(...) as Trainer._report does."""
    sys.path.insert(0, str(ROOT))
    from forgellm import runs

    writer = runs.RunWriter(folder, runs.RunStatus(state="running", pid=os.getpid(), total_steps=1000))
    t0 = time.perf_counter()
    for step in range(1, calls + 1):
        record = runs.TrainRecord(
            step=step,
            loss=3.14159,
            lr=1e-4,
            tokens_per_sec=12345.6,
            trained_tokens=step * 1024,
            peak_memory_gb=0.1234,
            epoch=round(step / 313, 4),
        )
        writer.log_metrics(record)
        writer.set_status(step=step, epoch=record.epoch, tokens_per_sec=record.tokens_per_sec, eta_s=12.3)
    per_report = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for step in range(calls):
        writer.log_metrics(runs.TrainRecord(step=step, loss=1.0))
    per_metrics = (time.perf_counter() - t0) / calls
    return {
        "calls": calls,
        "per_report_s": per_report,
        "log_metrics_s": per_metrics,
        "set_status_s": per_report - per_metrics,
    }


# ------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2-135m-instruct", help="comma list: tiny, smollm2-135m-instruct")
    ap.add_argument("--cases", default="lora,full,full-blocks", help="comma list: lora, full, full-blocks")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, help="max_seq_length for every model (default: 256)")
    ap.add_argument("--iters", help="N1,N2 for every model (default: tiny 20,120; smollm2 4,12)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per (tool, N); the fastest wall time is used")
    ap.add_argument("--blas-threads", action="store_true", help="also: tiny CPT with OPENBLAS_NUM_THREADS=1 vs unset")
    ap.add_argument("--stock-peer", action="store_true", help="also: plain `python -m mlx_lm lora` (tiny only)")
    ap.add_argument("--overhead-only", action="store_true", help="only the RunWriter micro-benchmark")
    ap.add_argument("--max-load", type=float, default=0.8)
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (run folders, logs)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="forgellm-train-bench-"))
    results: dict = {
        "cases": [],
        "blas_threads": None,
        "stock_peer": [],
        "overhead": None,
        "cpu_count": len(os.sched_getaffinity(0)),
        "forgellm_home": os.environ["FORGELLM_HOME"],
    }
    try:
        wait = wait_for_quiet(args.max_load, args.max_wait)
        ov = writer_overhead(work / "overhead")
        ov["load"] = wait
        results["overhead"] = ov
        print(
            f"RunWriter: log_metrics + set_status = {ov['per_report_s'] * 1e3:.3f} ms per report "
            f"(log_metrics {ov['log_metrics_s'] * 1e3:.3f} ms, set_status {ov['set_status_s'] * 1e3:.3f} ms; "
            f"1000 calls, load {wait['load1']})",
            flush=True,
        )
        if not args.overhead_only:
            run_cases(args, work, results)
        report(results)
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_cases(args: argparse.Namespace, work: Path, results: dict) -> None:
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    paths = ensure_models(names)
    kw = dict(max_load=args.max_load, max_wait=args.max_wait)
    for model in names:
        spec = dict(MODELS[model])
        if args.seq:
            spec["seq"] = args.seq
        if args.iters:
            spec["n1"], spec["n2"] = map(int, args.iters.split(","))
        seq, batch, n1, n2, lr = spec["seq"], args.batch, spec["n1"], spec["n2"], spec["lr"]
        data_dir = work / f"data-{model}-{seq}"
        prep = prepare_data(model, paths[model], seq, batch, data_dir)
        f_tokens = batch * prep["forgellm"]["targets_per_row"]
        m_tokens = prep["mlx_lm"]["trained_targets_per_step"]
        print(
            f"\n## {model}: batch {batch} x {seq}, N1={n1}, N2={n2}; per step ForgeLLM trains {f_tokens} targets, "
            f"mlx-lm {m_tokens:g} (min {prep['mlx_lm']['trained_targets_per_step_min']}, its own count "
            f"{prep['mlx_lm']['counted_tokens_per_step']:g}); "
            f"re-encode length diff {prep['mlx_lm']['reencode_len_diff']}",
            flush=True,
        )
        # (case label, tool, fine_tune_type, num_layers, N1, N2)
        plan = []
        if "lora" in cases:
            plan += [("lora", "forgellm", "lora", -1, n1, n2), ("lora", "mlx-lm", "lora", -1, n1, n2)]
        if "full" in cases or "full-blocks" in cases:
            plan += [("full", "mlx-lm", "full", -1, n1, n2)]
        if "full" in cases or (args.blas_threads and model == "tiny"):
            plan += [("full", "forgellm", "full", -1, n1, n2)]
        if "full-blocks" in cases:
            plan += [("full-blocks", "forgellm", "full", spec["layers"], n1, n2)]
        if args.blas_threads and model == "tiny":
            plan += [("full", "forgellm OPENBLAS_NUM_THREADS=1", "full", -1, n1, n2)]
        if args.stock_peer and model == "tiny":  # training on the reference BLAS is 7-8x slower: fewer steps
            s1, s2 = max(2, n1 // 2), max(4, n1 // 2 + (n2 - n1) // 5)
            plan += [
                ("lora", "mlx-lm (stock BLAS)", "lora", -1, s1, s2),
                ("full", "mlx-lm (stock BLAS)", "full", -1, s1, s2),
            ]
        timings: dict[tuple, list[list[ChildRun]]] = {p: [[], []] for p in plan}
        for rep in range(args.repeat):
            for which in (0, 1):
                for p in plan:
                    label, tool, ftt, layers = p[:4]
                    n = p[4 + which]
                    tag = (
                        f"{model}-{label}-{tool.split()[0]}{'-1t' if 'THREADS' in tool else ''}"
                        f"{'-stock' if 'stock' in tool else ''}-{n}-{rep}"
                    )
                    log = work / f"{tag}.log"
                    common = dict(fine_tune_type=ftt, num_layers=layers, batch=batch, iters=n, lr=lr)
                    env = {}
                    if tool.startswith("forgellm"):
                        argv = forgellm_argv(
                            model, ROOT / "dataset" / "beekeeping", work / "runs", tag, seq=seq, **common
                        )
                        if "THREADS" in tool:
                            env["OPENBLAS_NUM_THREADS"] = "1"
                    else:
                        argv = mlx_lm_argv(
                            paths[model],
                            data_dir,
                            work / f"adapters-{tag}",
                            seq=seq + 1,
                            stock="stock" in tool,
                            **common,
                        )
                    run = run_child(argv, log, env=env, **kw)
                    if tool.startswith("forgellm"):
                        run.load["metrics_tokens_per_s"] = forgellm_metrics_tokens_per_s(work / "runs" / tag)
                        shutil.rmtree(work / "runs" / tag, ignore_errors=True)
                    else:
                        shutil.rmtree(work / f"adapters-{tag}", ignore_errors=True)
                    timings[p][which].append(run)
                    print(
                        f"  {label:12s} {tool:32s} N={n:4d}  {run.wall_s:7.2f}s  RSS {run.maxrss_mb:7.1f} MB  "
                        f"load {run.load['load1']}{'' if run.load['quiet'] else ' (NOT quiet)'} "
                        f"waited {run.load['waited_s']}s",
                        flush=True,
                    )
        for p in plan:
            label, tool, ftt, layers, p1, p2 = p
            r1, r2 = timings[p]
            t1, t2 = min(r.wall_s for r in r1), min(r.wall_s for r in r2)
            tokens = f_tokens if tool.startswith("forgellm") else m_tokens
            s = steady(p1, p2, t1, t2, tokens)
            results["cases"].append(
                {
                    "model": model,
                    "case": label,
                    "tool": tool,
                    "fine_tune_type": ftt,
                    "num_layers": layers,
                    "batch": batch,
                    "seq": seq,
                    "n1": p1,
                    "n2": p2,
                    "t1_s": t1,
                    "t2_s": t2,
                    "t1_all_s": [r.wall_s for r in r1],
                    "t2_all_s": [r.wall_s for r in r2],
                    "tokens_per_step": tokens,
                    **s,
                    "peak_rss_mb": max(r.maxrss_mb for r in r1 + r2),
                    "loads": [r.load["load1"] for r in r1 + r2],
                    "all_quiet": all(r.load["quiet"] for r in r1 + r2),
                    "forgellm_logged_tokens_per_s": [r.load.get("metrics_tokens_per_s") for r in r2]
                    if tool.startswith("forgellm")
                    else None,
                    "data": prep,
                }
            )


def report(results: dict) -> None:
    cases = results["cases"]
    ov = results["overhead"]
    if cases:
        peer = {
            (c["model"], "full" if c["case"] == "full-blocks" else c["case"]): c for c in cases if c["tool"] == "mlx-lm"
        }
        rows = []
        for c in cases:
            p = peer.get((c["model"], "full" if c["case"] == "full-blocks" else c["case"]))
            is_peer = c["tool"] == "mlx-lm"
            tr = "" if is_peer or not p else f"{c['tokens_per_s'] / p['tokens_per_s']:.3f}"
            rr = "" if is_peer or not p else f"{c['peak_rss_mb'] / p['peak_rss_mb']:.3f}"
            what = c["case"]
            if c["fine_tune_type"] == "full":
                what += (
                    " (blocks + embeddings)"
                    if c["num_layers"] == -1 and c["tool"].startswith("forgellm")
                    else " (blocks only)"
                )
            logged = c.get("forgellm_logged_tokens_per_s") or []
            logged = f"{statistics.mean(logged):,.0f}" if logged and None not in logged else ""
            rows.append(
                [
                    f"{c['model']} {what} {c['batch']}x{c['seq']}",
                    c["tool"],
                    f"{c['tokens_per_s']:,.0f}",
                    tr,
                    f"{c['peak_rss_mb']:.0f}",
                    rr,
                    f"{c['step_s'] * 1e3:.1f}",
                    f"{c['n1']}/{c['n2']}: {c['t1_s']:.1f}/{c['t2_s']:.1f}",
                    logged,
                    " ".join(f"{x:.2f}" for x in c["loads"]) + ("" if c["all_quiet"] else " (!)"),
                ]
            )
        print(
            "\nSteady-state tokens/s = (N2-N1) x targets/step / (T2-T1); ratios are ForgeLLM / mlx-lm (same BLAS)."
            " Goal: tokens/s ratio >= 0.98, RSS ratio <= 1.1.\n"
        )
        print(
            md_table(
                [
                    "case",
                    "tool",
                    "tokens/s",
                    "ratio",
                    "peak RSS MB",
                    "ratio",
                    "ms/step",
                    "N1/N2: T1/T2 s",
                    "ForgeLLM's own logged tok/s",
                    "load1 at each run start",
                ],
                rows,
            )
        )
        threads = [
            c for c in cases if c["model"] == "tiny" and c["case"] == "full" and c["tool"].startswith("forgellm")
        ]
        if len(threads) == 2:
            print("\nForgeLLM, tiny CPT (full, num_layers -1):\n")
            print(
                md_table(
                    ["OPENBLAS_NUM_THREADS", "tokens/s", "ms/step"],
                    [
                        [
                            "1" if "THREADS" in c["tool"] else "unset (2 cores)",
                            f"{c['tokens_per_s']:,.0f}",
                            f"{c['step_s'] * 1e3:.1f}",
                        ]
                        for c in threads
                    ],
                )
            )
        rows = []
        for c in cases:
            if c["tool"].startswith("forgellm") and ov:
                per_step = ov["per_report_s"] / 10
                rows.append(
                    [
                        f"{c['model']} {c['case']}",
                        c["tool"],
                        f"{c['step_s'] * 1e3:.1f}",
                        f"{100 * per_step / c['step_s']:.3f}%",
                        f"{100 * ov['per_report_s'] / c['step_s']:.3f}%",
                    ]
                )
        if rows:
            print(
                f"\nMetrics/status writing: {ov['per_report_s'] * 1e3:.3f} ms per report (log_metrics + set_status), "
                "one report every steps_per_report = 10 steps. Goal < 1% of the step time.\n"
            )
            print(
                md_table(
                    ["case", "tool", "step ms", "overhead per step (report every 10)", "if reporting every step"], rows
                )
            )
    elif ov:
        print(json.dumps(ov, indent=2))


if __name__ == "__main__":
    main()
