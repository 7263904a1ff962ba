"""Chat and evaluation speed against mlx-lm: one run, the same model, prompt and settings on both sides.

    python bench/chat_bench.py                         # SmolLM2-135M-Instruct, all four parts (~6 minutes)
    python bench/chat_bench.py --parts startup --pairs 4

Parts (greedy, --tokens new tokens, a chat-formatted prompt; every timed pair runs ABBA so drift hits
both sides alike; both sides must produce the same text, else the run stops):

- direct: ForgeLLM's chat path (`inference.stream`: its worker thread, lock and stop checks) vs mlx-lm's
  `stream_generate`, in this process on one loaded model;
- app: the launched app (`python app.py`: Gradio's queue, the Chat tab's handler, HTTP streaming, read
  update by update from its streaming route `/gradio_api/call/_respond` as they arrive) vs mlx-lm's
  `stream_generate` in this process. (`gradio_client` is not used for timing: its own polling added
  100-400 ms to the first update in a trial);
- eval: `forgellm.evaluation.measure_split` vs `mlx_lm.perplexity.eval_ppl` on the same windows of the
  shipped corpus (full windows only, so both score the same tokens), same batch size;
- startup: whole processes, `python -m forgellm generate --chat` vs `python -m mlx_lm generate` (which
  formats chats by default), both on the same OpenBLAS (the peer gets the library ForgeLLM loads through
  LD_PRELOAD: the BLAS is not what is compared).

Figures: time to first token (request to first token: prompt processing included; for the app, the HTTP
round trip and queue too) and tokens/s over the reply (tokens after the first / time from the first to
the last), the same wall-clock definition for every side.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import forgellm  # noqa: E402,F401  (loads OpenBLAS before mlx)
from forgellm import inference  # noqa: E402

QUESTION = "Write a long story about a beekeeper and her bees."


class Timing:
    def __init__(self, ttft: float, tps: float, tokens: int, text: str):
        self.ttft, self.tps, self.tokens, self.text = ttft, tps, tokens, text


def timed(records: Iterator[str], count: Callable[[str], int]) -> Timing:
    """Time a stream of text pieces; `count` turns the whole text into its token count."""
    tic = time.perf_counter()
    first = last = None
    text = ""
    for piece in records:
        now = time.perf_counter()
        if piece and first is None:
            first = now
        if piece:
            last = now
        text += piece
    tokens = count(text)
    return Timing(first - tic, (tokens - 1) / (last - first) if last > first else float("nan"), tokens, text)


def abba(pairs: int, a: Callable[[], Timing], b: Callable[[], Timing]) -> tuple[list[Timing], list[Timing]]:
    ours, theirs = [], []
    for i in range(pairs):
        for side in (a, b) if i % 2 == 0 else (b, a):
            (ours if side is a else theirs).append(side())
    return ours, theirs


def report(label: str, ours: list[Timing], theirs: list[Timing], peer: str) -> None:
    texts = {t.text for t in ours + theirs}
    if len(texts) != 1:
        sys.exit(f"{label}: the two sides generated different texts: {sorted(texts)!r}")
    med = statistics.median
    tps_ratios = [o.tps / t.tps for o, t in zip(ours, theirs, strict=True)]
    ttft_extra = [(o.ttft - t.ttft) * 1000 for o, t in zip(ours, theirs, strict=True)]
    print(f"\n{label} ({ours[0].tokens} tokens, text {ours[0].text.strip()[:50]!r}...)")
    print(f"  tokens/s: ForgeLLM {med([o.tps for o in ours]):.1f}, {peer} {med([t.tps for t in theirs]):.1f}")
    print(f"    ratio, median of pairs {med(tps_ratios):.3f} ({', '.join(f'{r:.3f}' for r in tps_ratios)})")
    print(
        f"  time to first token, ms: ForgeLLM {med([o.ttft for o in ours]) * 1000:.0f}, "
        f"{peer} {med([t.ttft for t in theirs]) * 1000:.0f}"
    )
    extra = ", ".join(f"{d:+.0f}" for d in ttft_extra)
    print(f"    ForgeLLM minus peer, median of pairs {med(ttft_extra):+.0f} ({extra})")
    # Whichever side ran second in a pair starts warmer (two processes share 2 cores in the app part): the
    # mean over both orders cancels that.
    first, second = ttft_extra[0::2], ttft_extra[1::2]
    print(
        f"    by order: ForgeLLM first {statistics.mean(first):+.0f}, ForgeLLM second "
        f"{statistics.mean(second):+.0f}, mean of all pairs {statistics.mean(ttft_extra):+.0f}"
    )


# ---- the two in-process generators -------------------------------------------------------------------


def forgellm_pieces(loaded, prompt: str, tokens: int) -> Iterator[str]:
    settings = inference.GenerationSettings(max_tokens=tokens, temperature=0.0)
    for record in inference.stream(loaded, prompt, settings):
        yield record.text


def mlx_lm_pieces(loaded, prompt: str, tokens: int) -> Iterator[str]:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    for record in stream_generate(loaded.model, loaded.tokenizer, prompt, max_tokens=tokens, sampler=make_sampler(0.0)):
        yield record.text


def direct(loaded, prompt: str, args) -> None:
    count = lambda text: len(loaded.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    for pieces in (forgellm_pieces, mlx_lm_pieces):
        timed(pieces(loaded, prompt, 8), count)  # warm-up
    ours, theirs = abba(
        args.pairs,
        lambda: timed(forgellm_pieces(loaded, prompt, args.tokens), count),
        lambda: timed(mlx_lm_pieces(loaded, prompt, args.tokens), count),
    )
    report("direct: inference.stream vs stream_generate", ours, theirs, "mlx-lm")


# ---- through the launched app ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            opener.open(f"http://127.0.0.1:{port}/", timeout=5)
            return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit("the app exited before serving")
            time.sleep(0.5)
    proc.kill()
    sys.exit("the app did not answer in 120 s")


def app_pieces(url: str, model: str, tokens: int) -> Iterator[str]:
    """The reply as a browser sees it grow: the app's HTTP streaming route, read update by update."""
    import httpx

    from forgellm import choices
    from forgellm.ui import chat

    settings = vars(inference.GenerationSettings(max_tokens=tokens, temperature=0.0))
    data = [QUESTION, [], [], False, model, choices.NO_ADAPTER, None, "", ""]
    data += [settings[n] for n in chat.SETTING_FIELDS]
    shown = ""
    with httpx.Client(trust_env=False, timeout=120) as http:
        event = http.post(f"{url}/gradio_api/call/_respond", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"{url}/gradio_api/call/_respond/{event}") as answer:
            for line in answer.iter_lines():
                if not line.startswith("data:"):
                    continue
                update = json.loads(line.removeprefix("data:"))
                history = update[0] if isinstance(update, list) else None  # None: an update that skips the chat
                is_reply = isinstance(history, list) and history and history[-1]["role"] == "assistant"
                reply = inference.message_text(history[-1]["content"]) if is_reply else ""
                if len(reply) > len(shown):
                    yield reply[len(shown) :]
                    shown = reply


def through_app(loaded, prompt: str, args) -> None:
    count = lambda text: len(loaded.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    port = free_port()
    proc = launch_app(port)
    try:
        url = f"http://127.0.0.1:{port}"
        timed(app_pieces(url, args.model, 8), count)  # warm-up: the app loads the model
        timed(mlx_lm_pieces(loaded, prompt, 8), count)
        ours, theirs = abba(
            args.pairs,
            lambda: timed(app_pieces(url, args.model, args.tokens), count),
            lambda: timed(mlx_lm_pieces(loaded, prompt, args.tokens), count),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Gradio's Chatbot strips the reply's surrounding whitespace: compare what a user reads.
    for t in ours + theirs:
        t.text = t.text.strip()
    report("app: the launched app over HTTP vs stream_generate in-process", ours, theirs, "mlx-lm")


# ---- evaluation --------------------------------------------------------------------------------------


def evaluation(loaded, args) -> None:
    import mlx.core as mx
    from mlx_lm.perplexity import eval_ppl

    from forgellm import evaluation as ev
    from forgellm.data.records import Split
    from forgellm.data.tokens import tokenizer_info

    docs = ev.read_documents([ROOT / "dataset"])
    split = ev.text_split(docs.texts, loaded.tokenizer, args.seq_len)
    full = split.mask[:, 1:].all(axis=1)
    split = Split(split.tokens[full][: args.windows], split.mask[full][: args.windows])
    rows = mx.array(split.tokens)
    scored = split.tokens.shape[0] * (split.tokens.shape[1] - 1)
    eos = tokenizer_info(loaded.tokenizer).eos_id
    ours_s, theirs_s, values = [], [], {}

    def ours() -> None:
        values["forgellm"] = ev.measure_split(loaded.model, split, eos, "documents", args.batch_size).perplexity

    def theirs() -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress line
            values["mlx-lm"] = eval_ppl(loaded.model, rows, batch_size=args.batch_size)[0]

    for side in (ours, theirs):  # warm-up
        side()
    for i in range(args.pairs):
        for side, times in ((ours, ours_s), (theirs, theirs_s)) if i % 2 == 0 else ((theirs, theirs_s), (ours, ours_s)):
            tic = time.perf_counter()
            side()
            times.append(time.perf_counter() - tic)
    med = statistics.median
    ratios = [t / o for o, t in zip(ours_s, theirs_s, strict=True)]  # speed ratio = their time / ours
    print(f"\neval: {len(rows)} windows x {args.seq_len} tokens ({scored:,} scored), batch {args.batch_size}")
    print(f"  perplexity: ForgeLLM {values['forgellm']:.4f}, mlx-lm eval_ppl {values['mlx-lm']:.4f}")
    print(f"  tokens/s: ForgeLLM {scored / med(ours_s):,.0f}, mlx-lm {scored / med(theirs_s):,.0f}")
    print(f"    speed ratio, median of pairs {med(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})")


# ---- start-up: whole processes -----------------------------------------------------------------------


def openblas_path() -> str | None:
    from forgellm import platform

    state = platform.ensure_fast_blas()
    return state.load_path if state.name == "openblas" else None


def run_process(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    tic = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - tic, done.stdout


def startup(loaded, args) -> None:
    env = {**os.environ}
    blas = openblas_path()
    peer_env = {**env, "LD_PRELOAD": blas} if blas else env
    common = ["--prompt", QUESTION, "--max-tokens", str(args.tokens), "--temp", "0"]
    ours_argv = [sys.executable, "-m", "forgellm", "generate", "--model", args.model, "--chat", *common]
    peer_argv = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(loaded.model_path), *common]
    texts = {}

    def ours() -> float:
        seconds, texts["forgellm"] = run_process(ours_argv, env)
        return seconds

    def theirs() -> float:
        seconds, out = run_process(peer_argv, peer_env)
        texts["mlx-lm"] = out.split("==========")[1] if "==========" in out else out
        return seconds

    ours(), theirs()  # warm-up: files in the page cache
    ours_s, theirs_s = [], []
    for i in range(args.pairs):
        for side, times in ((ours, ours_s), (theirs, theirs_s)) if i % 2 == 0 else ((theirs, theirs_s), (ours, ours_s)):
            times.append(side())
    if texts["forgellm"].strip() != texts["mlx-lm"].strip():
        sys.exit(f"startup: different texts: {texts!r}")
    med = statistics.median
    ratios = [o / t for o, t in zip(ours_s, theirs_s, strict=True)]
    print(f"\nstartup: whole process, {args.tokens} tokens, BLAS for both: {blas or 'the default'}")
    print(f"  python -m forgellm generate: {med(ours_s):.2f} s ({', '.join(f'{t:.2f}' for t in ours_s)})")
    print(f"  python -m mlx_lm generate:   {med(theirs_s):.2f} s ({', '.join(f'{t:.2f}' for t in theirs_s)})")
    print(f"    time ratio, median of pairs {med(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=5, help="timed pairs per part (default 5)")
    parser.add_argument("--parts", nargs="+", default=["direct", "app", "eval", "startup"])
    parser.add_argument("--seq-len", type=int, default=512, help="eval window length")
    parser.add_argument("--windows", type=int, default=8, help="eval windows (full ones only)")
    parser.add_argument("--batch-size", type=int, default=8, help="eval batch size, both sides")
    args = parser.parse_args()
    print(f"model {args.model}, load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")
    loaded = inference.load_for_chat(args.model)
    prompt = loaded.prompt_for([{"role": "user", "content": QUESTION}]).text
    parts = {
        "direct": lambda: direct(loaded, prompt, args),
        "app": lambda: through_app(loaded, prompt, args),
        "eval": lambda: evaluation(loaded, args),
        "startup": lambda: startup(loaded, args),
    }
    for name in args.parts:
        parts[name]()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
