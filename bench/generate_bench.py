"""Generation speed of the built-in SmolLM2 models: ForgeLLM's chat path vs mlx-lm's own stream_generate.

    python bench/generate_bench.py [--tokens 60]

Both sides run in this process on the same loaded model with greedy sampling, so the difference is
ForgeLLM's wrapper (model cache, lock, template) alone. Builds the models into FORGELLM_HOME if needed.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "smollm2-135m-instruct-4bit"])
    args = parser.parse_args()
    print(f"greedy, up to {args.tokens} new tokens, load average {os.getloadavg()[0]:.2f}\n")
    print("| model | load s | ForgeLLM tok/s | mlx-lm stream_generate tok/s | answer starts |\n|---|---|---|---|---|")
    for name in args.models:
        t0 = time.perf_counter()
        loaded = load_for_chat(name)
        load_s = time.perf_counter() - t0
        prompt = loaded.chat_prompt(QUESTION)
        forge_tps(loaded, prompt, 5)  # warm-up
        peer, _ = peer_tps(loaded, prompt, args.tokens)
        ours, text = forge_tps(loaded, prompt, args.tokens)
        print(f"| {name} | {load_s:.1f} | {ours:.1f} | {peer:.1f} | {text.strip()[:40]!r} |")


if __name__ == "__main__":
    main()
