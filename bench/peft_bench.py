"""LoRA training speed on a ~10M-parameter llama: ForgeLLM vs `mlx_lm lora` vs PyTorch + PEFT, one run.

    python bench/peft_bench.py --torch-python /path/to/venv/bin/python     # 4 x 512, LoRA rank 8
    python bench/peft_bench.py --torch-python ... --seq 256 --steps 10,60   # other shapes

PyTorch and PEFT are benchmark-only: install them in a separate virtual environment (the CPU wheel of
torch, then `pip install peft transformers safetensors numpy`) and pass its interpreter. Without
--torch-python only the two MLX tools run.

Model: a llama of 11.4M parameters (hidden 384, 6 layers, 6 heads, MLP 1024, vocab 2048, tied
embeddings) built like the tiny model (`forgellm.models.tiny.build_tiny` with a larger TinySpec, random
init, same tokenizer), saved once under $FORGELLM_HOME/models/bench-10m. All three tools load that
folder (transformers reads mlx-lm's llama safetensors as they are).

Work: the same token windows of seq + 1 tokens from dataset/beekeeping (ForgeLLM's pipeline), batch 4,
Adam, constant LR 1e-4, LoRA rank 8, scale 20 (PEFT: lora_alpha = 160), dropout 0, on every linear layer
of every block (mlx-lm's default keys; PEFT target_modules = the same seven projections), float32.
The MLX tools are timed as in train_bench.py (two run lengths N1 < N2, steady tokens/s from the
difference, start-up cancels), each after an untimed 2-step run of the same tool: MLX's CPU backend
builds fused kernels with the C++ compiler the first time a shape is seen (cached in /tmp), which would
otherwise land in one tool's first run only. The PyTorch child times its own steps N1+1..N2 after N1 warm-up steps in
one process (eager mode, torch's default threads = the cores). Peak RSS: each child's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import (  # noqa: E402
    PY,
    ROOT,
    forgellm_argv,
    md_table,
    mlx_lm_argv,
    prepare_data,
    run_child,
    steady,
    wait_for_quiet,
)

SPEC = dict(
    vocab_size=2048,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=6,
    num_key_value_heads=6,
    intermediate_size=1024,
    max_position_embeddings=2048,
)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

BUILD_CHILD = r"""
import sys, json
from pathlib import Path
from forgellm.models.tiny import TinySpec, build_tiny
build_tiny(Path(sys.argv[1]), TinySpec(**json.loads(sys.argv[2])))
"""

TORCH_CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

a = json.loads(sys.argv[1])
torch.manual_seed(0)
rows = np.load(a["windows"]).astype(np.int64)
model = LlamaForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=a["rank"], lora_alpha=a["rank"] * a["scale"], lora_dropout=0.0,
                                         target_modules=a["targets"], bias="none"))
model.train()
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=a["lr"])
order = np.random.default_rng(0).permutation(len(rows))
def step(i):
    idx = order[(np.arange(a["batch"]) + i * a["batch"]) % len(rows)]
    batch = torch.from_numpy(rows[idx])
    logits = model(input_ids=batch[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
first = [step(i) for i in range(a["n1"])]
t0 = time.perf_counter()
for i in range(a["n1"], a["n2"]):
    last = step(i)
seconds = time.perf_counter() - t0
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("TORCH_JSON " + json.dumps({"seconds": seconds, "first_loss": first[0], "last_loss": last,
      "threads": torch.get_num_threads(), "trainable": trainable, "torch": torch.__version__,
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_model(home: Path) -> Path:
    path = home / "models" / "bench-10m"
    if not (path / "config.json").is_file():
        subprocess.run(
            [PY, "-c", BUILD_CHILD, str(path), json.dumps(SPEC)],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    return path


def write_windows(model_path: Path, seq: int, out: Path) -> Path:
    """The training windows ForgeLLM's pipeline makes, as an .npy file for the PyTorch child."""
    code = (
        "import sys, numpy as np; from transformers import AutoTokenizer; from forgellm.config import from_dict; "
        "from forgellm.data import prepare; tok = AutoTokenizer.from_pretrained(sys.argv[1]); "
        "p = prepare(from_dict({'data': sys.argv[2], 'max_seq_length': int(sys.argv[3]), 'train_type': 'cpt'}), tok); "
        "np.save(sys.argv[4], np.asarray(p.train.tokens))"
    )
    target = out / "windows.npy"
    subprocess.run(
        [PY, "-c", code, str(model_path), str(ROOT / "dataset" / "beekeeping"), str(seq), str(target)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return target


def run_torch(torch_python: str, args: dict, max_load: float, max_wait: float) -> dict:
    load = wait_for_quiet(max_load, max_wait)
    out = subprocess.run([torch_python, "-c", TORCH_CHILD, json.dumps(args)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"PyTorch child failed:\n{out.stderr[-4000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("TORCH_JSON "))
    return {**json.loads(line[len("TORCH_JSON ") :]), "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", help="interpreter of a venv with torch + peft + transformers")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", default="10,60", help="N1,N2")
    ap.add_argument("--max-load", type=float, default=0.8)
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()
    n1, n2 = (int(x) for x in args.steps.split(","))
    home = Path(os.environ["FORGELLM_HOME"])
    model = build_model(home)
    targets_per_step = args.batch * args.seq
    results: dict = {"model": str(model), "spec": SPEC, "batch": args.batch, "seq": args.seq, "n1": n1, "n2": n2}
    with tempfile.TemporaryDirectory(prefix="forgellm-peft-bench-") as tmp:
        work = Path(tmp)
        prep = prepare_data("bench-10m", model, args.seq, args.batch, work / "mlx_data")
        results["prep"] = prep
        common = dict(
            fine_tune_type="lora", num_layers=SPEC["num_hidden_layers"], batch=args.batch, seq=args.seq, lr=1e-4
        )
        rows = []
        for tool in ("forgellm", "mlx-lm"):
            walls, rss = [], []
            for n in (2, n1, n2):  # the untimed 2-step run builds MLX's JIT kernels for these shapes first
                if tool == "forgellm":
                    argv = forgellm_argv(
                        str(model), ROOT / "dataset" / "beekeeping", work / "runs", f"r{n}", iters=n, **common
                    )
                else:
                    argv = mlx_lm_argv(
                        model, work / "mlx_data", work / f"adapters{n}", iters=n, **{**common, "seq": args.seq + 1}
                    )
                run = run_child(argv, work / f"{tool}-{n}.log", max_load=args.max_load, max_wait=args.max_wait)
                if n == 2:
                    continue
                walls.append(run.wall_s)
                rss.append(run.maxrss_mb)
                print(f"{tool} N={n}: {run.wall_s:.1f}s, load {run.load['load1']}", flush=True)
            figures = {**steady(n1, n2, walls[0], walls[1], targets_per_step), "maxrss_mb": max(rss), "walls": walls}
            results[tool] = figures
        if args.torch_python:
            t = run_torch(
                args.torch_python,
                {
                    "model": str(model),
                    "windows": str(write_windows(model, args.seq, work)),
                    "batch": args.batch,
                    "n1": n1,
                    "n2": n2,
                    "rank": 8,
                    "scale": 20.0,
                    "lr": 1e-4,
                    "targets": LORA_TARGETS,
                },
                args.max_load,
                args.max_wait,
            )
            t["tokens_per_s"] = (n2 - n1) * targets_per_step / t["seconds"]
            results["pytorch-peft"] = t
            print(f"pytorch+peft: {t['seconds']:.1f}s for {n2 - n1} steps, load {t['load']['load1']}", flush=True)
    base = results["mlx-lm"]["tokens_per_s"]
    for tool in ("forgellm", "mlx-lm", "pytorch-peft"):
        if tool in results:
            r = results[tool]
            rows.append(
                [tool, f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / base:.2f}", f"{r['maxrss_mb']:,.0f}"]
            )
    print(f"\n## ~10M llama, LoRA r8, batch {args.batch} x {args.seq}, steady state over steps {n1 + 1}-{n2}\n")
    print(md_table(["tool", "tokens/s", "vs mlx-lm", "peak RSS MB"], rows))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
