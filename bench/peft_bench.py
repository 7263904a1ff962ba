"""LoRA training speed on a ~10M-parameter llama: ForgeLLM vs `mlx_lm lora` vs PyTorch + PEFT.

    python -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install -r bench/requirements-peft.txt
    python bench/peft_bench.py --torch-python /tmp/torch-venv/bin/python    # 4 x 512, LoRA rank 8: ~10 min
    python bench/peft_bench.py --torch-python ... --seq 256 --steps 10,60    # other shapes

PyTorch and PEFT are benchmark-only: bench/requirements-peft.txt pins the versions reported in
BENCHMARKS.md (torch 2.13.0+cpu from PyTorch's CPU index, peft 0.21.2, transformers 5.24.0) for a
separate virtual environment whose interpreter is passed as --torch-python. Without it only the two
MLX tools run.

Model: a llama of 11.4M parameters (hidden 384, 6 layers, 6 heads, MLP 1024, vocab 2048, tied
embeddings) built like the tiny model (`forgellm.models.tiny.build_tiny` with a larger TinySpec, random
init, same tokenizer), saved once under $FORGELLM_HOME/models/bench-10m. All three tools load that
folder (transformers reads mlx-lm's llama safetensors as they are).

Work: the same token windows of seq + 1 tokens from dataset/beekeeping (ForgeLLM's pipeline), batch 4,
Adam with bias correction (PyTorch's Adam always corrects; ForgeLLM's `optimizer: adam` does; mlx-lm's
CLI is given `optimizer_config: {adam: {bias_correction: true}}`, see train_bench.mlx_lm_argv), constant
LR 1e-4, LoRA rank 8, scale 20 (PEFT: lora_alpha = 160), dropout 0, on every linear layer of every
block (mlx-lm's default keys; PEFT target_modules = the same seven projections), float32.

Timing, the same for all three tools: whole runs, each a child process of this script (ForgeLLM's
`python -m forgellm train`, mlx-lm's CLI, and a PyTorch script that loads the model, wraps it with PEFT
and trains N steps), run with N1 and N2 steps; steady-state tokens/s = (N2 - N1) x tokens per step /
(T2 - T1) from the children's wall times, so start-up (imports, model load, the MLX tools' one-batch
validations, compilation, the final save) cancels. First each tool makes an untimed 2-step run: MLX's
CPU backend builds fused kernels with the C++ compiler the first time a shape is seen (cached in /tmp),
which would otherwise land in one tool's first timed run only. Then the N1 runs of the three tools, then
the N2 runs, the order of tools reversed each round (ABC CBA): drift hits all alike. Each run waits for a
1-minute load average below --max-load. Peak RSS: each child's ru_maxrss (os.wait4). PyTorch runs in
eager mode with its default threads (the cores); MLX's OpenBLAS uses the cores too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
import json, sys
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
for i in range(a["steps"]):
    idx = order[(np.arange(a["batch"]) + i * a["batch"]) % len(rows)]
    batch = torch.from_numpy(rows[idx])
    logits = model(input_ids=batch[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    value = loss.item()  # one readback per step, as the MLX tools evaluate each step
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("TORCH_JSON " + json.dumps({"last_loss": value, "threads": torch.get_num_threads(), "trainable": trainable,
                                  "torch": torch.__version__}))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-python", help="interpreter of a venv with bench/requirements-peft.txt installed")
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
    tools = ["forgellm", "mlx-lm"] + (["pytorch-peft"] if args.torch_python else [])
    with tempfile.TemporaryDirectory(prefix="forgellm-peft-bench-") as tmp:
        work = Path(tmp)
        prep = prepare_data("bench-10m", model, args.seq, args.batch, work / "mlx_data")
        results["prep"] = prep
        windows = write_windows(model, args.seq, work) if args.torch_python else None
        common = dict(
            fine_tune_type="lora", num_layers=SPEC["num_hidden_layers"], batch=args.batch, seq=args.seq, lr=1e-4
        )

        def argv(tool: str, n: int) -> list[str]:
            if tool == "forgellm":
                return forgellm_argv(
                    str(model), ROOT / "dataset" / "beekeeping", work / "runs", f"r{n}", iters=n, **common
                )
            if tool == "mlx-lm":
                return mlx_lm_argv(
                    model, work / "mlx_data", work / f"adapters{n}", iters=n, **{**common, "seq": args.seq + 1}
                )
            spec = {"model": str(model), "windows": str(windows), "batch": args.batch, "steps": n, "rank": 8}
            spec |= {"scale": 20.0, "lr": 1e-4, "targets": LORA_TARGETS}
            return [args.torch_python, "-c", TORCH_CHILD, json.dumps(spec)]

        walls: dict[str, dict[int, float]] = {tool: {} for tool in tools}
        rss: dict[str, list[float]] = {tool: [] for tool in tools}
        # The untimed 2-step runs first, then N1 then N2 rounds, tools in ABC then CBA order.
        plan = [(2, tool) for tool in tools] + [(n1, tool) for tool in tools] + [(n2, tool) for tool in tools[::-1]]
        for n, tool in plan:
            run = run_child(argv(tool, n), work / f"{tool}-{n}.log", max_load=args.max_load, max_wait=args.max_wait)
            shutil.rmtree(work / "runs" / f"r{n}", ignore_errors=True)
            shutil.rmtree(work / f"adapters{n}", ignore_errors=True)
            print(f"{tool} N={n}: {run.wall_s:.1f}s, RSS {run.maxrss_mb:,.0f} MB, load {run.load['load1']}", flush=True)
            if n == 2:
                continue
            walls[tool][n] = run.wall_s
            rss[tool].append(run.maxrss_mb)
        for tool in tools:
            s = steady(n1, n2, walls[tool][n1], walls[tool][n2], targets_per_step)
            results[tool] = {**s, "maxrss_mb": max(rss[tool]), "walls": [walls[tool][n1], walls[tool][n2]]}
    base = results["mlx-lm"]["tokens_per_s"]
    rows = []
    for tool in tools:
        r = results[tool]
        rows.append([tool, f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / base:.2f}", f"{r['maxrss_mb']:,.0f}"])
    print(f"\n## ~10M llama, LoRA r8, batch {args.batch} x {args.seq}, steady state over steps {n1 + 1}-{n2}\n")
    print(md_table(["tool", "tokens/s", "vs mlx-lm", "peak RSS MB"], rows))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
