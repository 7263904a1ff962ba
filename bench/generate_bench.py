"""Generation speed of the built-in SmolLM2 models: ForgeLLM's chat path vs mlx-lm's own stream_generate.

    python bench/generate_bench.py [--tokens 60] [--samples 5]      # about 2 minutes (both models)

Both sides run in this process on the same loaded model with greedy sampling, so the difference is
ForgeLLM's wrapper (model cache, lock, template) alone. After one untimed warm-up of each side, each
model is timed --samples times per side in alternating order (ForgeLLM, mlx-lm, mlx-lm, ForgeLLM, ...:
ABBA, so a drifting machine speed hits both alike); the table gives the median tokens/s of each side
with its range, and the median of the per-pair ratios. Also printed: each model folder's size on disk
(`du -sh`, MiB: the 4-bit and float32 sizes quoted in BENCHMARKS.md). Builds the models into
FORGELLM_HOME if needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import forgellm  # noqa: E402,F401  (loads OpenBLAS before mlx)
from forgellm.inference import GenerationSettings, load_for_chat, stream  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer, then describe the city."}]


def peer_tps(loaded, prompt: str, tokens: int) -> tuple[float, str]:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    text, last = "", None
    for last in stream_generate(loaded.model, loaded.tokenizer, prompt, max_tokens=tokens, sampler=make_sampler(0.0)):
        text += last.text
    return last.generation_tps, text


def forge_tps(loaded, prompt: str, tokens: int) -> tuple[float, str]:
    text, last = "", None
    for last in stream(loaded, prompt, GenerationSettings(max_tokens=tokens, temperature=0.0, top_p=1.0)):
        text += last.text
    return last.generation_tps, text


def disk_mib(folder: Path) -> str:
    """`du -sh` of the folder (MiB, what a file manager shows)."""
    return subprocess.run(["du", "-sh", str(folder)], capture_output=True, text=True, check=True).stdout.split()[0]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--samples", type=int, default=5, help="timed generations per side and model (default 5)")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "smollm2-135m-instruct-4bit"])
    args = parser.parse_args()
    print(f"greedy, up to {args.tokens} new tokens, {args.samples} samples per side, ABBA")
    print(f"load average {os.getloadavg()[0]:.2f}\n")
    rows, sizes = [], []
    for name in args.models:
        t0 = time.perf_counter()
        loaded = load_for_chat(name)
        load_s = time.perf_counter() - t0
        prompt = loaded.chat_prompt(QUESTION)
        forge_tps(loaded, prompt, 5)  # warm-up of both paths
        peer_tps(loaded, prompt, 5)
        tps: dict[str, list[float]] = {"forgellm": [], "mlx-lm": []}
        sides = {"forgellm": forge_tps, "mlx-lm": peer_tps}
        for i in range(args.samples):
            for side in ("forgellm", "mlx-lm") if i % 2 == 0 else ("mlx-lm", "forgellm"):
                speed, text = sides[side](loaded, prompt, args.tokens)
                tps[side].append(speed)
        ratios = [f / m for f, m in zip(tps["forgellm"], tps["mlx-lm"], strict=True)]
        rows.append(
            f"| {name} | {load_s:.1f} | {spread(tps['forgellm'])} | {spread(tps['mlx-lm'])} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {text.strip()[:40]!r} |"
        )
        sizes.append(f"{name}: {disk_mib(loaded.model_path)} on disk (du -sh {loaded.model_path})")
    print(
        "| model | load s | ForgeLLM tok/s, median (range) | mlx-lm stream_generate tok/s, median (range) "
        "| ratio, median (range) | answer starts |\n|---|---|---|---|---|---|"
    )
    print("\n".join(rows))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print("\n".join(sizes))


if __name__ == "__main__":
    main()
