"""Many chat users at once against one launched app, and the app's memory over a soak.

    python bench/chat_load_bench.py                       # 8 clients x 3 turns, SmolLM2, then a 5-minute soak
    python bench/chat_load_bench.py --model tiny --soak-minutes 30

1. Load: `--clients` threads, each its own session (its own conversation), send `--turns` messages one
   after another through the app's HTTP streaming route (`/gradio_api/call/_respond`, what a browser's
   request goes through: Gradio's queue and the Chat tab's handler), greedy, `--tokens` new tokens, all
   clients at once. Every reply is checked: it completed, it continues that client's own history (no
   cross-talk: the history sent back holds exactly that client's messages), and its text equals the reply
   the same prompt got alone before the load started. Reported: errors, p50/p95 time to first token (from
   the request to the first streamed text, queueing included) and p50/p95 tokens/s of the replies.
2. Soak: for `--soak-minutes`, one client chats continuously while another calls the Monitoring tab's
   refresh on a run folder every 2 s; with `--train`, a long run of the tiny model trains meanwhile (so
   every refresh has new metrics), and with `--browser`, headless Chromium keeps the app open on the
   Monitoring tab following that run (its own 2 s timer). The app process's resident memory (VmRSS) is
   sampled every 10 s. Reported: RSS every `--report-every` minutes and its least-squares growth in MB/min
   over the soak's second half (flat is about 0: Gradio keeps the state of at most 256 sessions, and each
   HTTP API call is a new session, so memory rises for the first few hundred calls, then stays).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from chat_bench import free_port, launch_app  # noqa: E402

import forgellm  # noqa: E402,F401  (loads OpenBLAS before mlx)
from forgellm import choices, inference  # noqa: E402
from forgellm.ui import chat  # noqa: E402

PROMPTS = [
    "Tell me about bees.",
    "What do beekeepers wear?",
    "Why do bees make honey?",
    "Describe a beehive.",
    "What is a queen bee?",
    "How do bees find flowers?",
    "What is pollen?",
    "When do bees swarm?",
]


SAMPLE_EVERY_S = 10


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def os_threads(pid: int) -> int:
    """The process's OS threads (a thread that outlives its work shows here first, then in RSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def turn(url: str, model: str, message: str, history: list, tokens: int) -> dict:
    """One message through the app's streaming route: the final history, time to first text, tokens/s."""
    import httpx

    settings = vars(inference.GenerationSettings(max_tokens=tokens, temperature=0.0))
    # The tiny model's chat-formatted replies are whitespace (its weights are random): send it plain text.
    template = "{{ messages[-1]['content'] }}" if model.startswith("tiny") else ""
    data = [message, history, [], False, model, choices.NO_ADAPTER, None, "", template]
    data += [settings[n] for n in chat.SETTING_FIELDS]
    tic = time.perf_counter()
    first = last = None
    final = None
    with httpx.Client(trust_env=False, timeout=600) as http:
        event = http.post(f"{url}/gradio_api/call/_respond", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"{url}/gradio_api/call/_respond/{event}") as answer:
            kind = ""
            for line in answer.iter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                if not line.startswith("data:"):
                    continue
                if kind == "error":
                    raise RuntimeError(f"the app answered an error: {line}")
                update = json.loads(line.removeprefix("data:"))
                chat_history = update[0] if isinstance(update, list) else None
                if isinstance(chat_history, list) and chat_history and chat_history[-1]["role"] == "assistant":
                    if inference.message_text(chat_history[-1]["content"]):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        final = chat_history
    if final is None:
        raise RuntimeError("no reply")
    info = update[3] if isinstance(update, list) and len(update) > 3 else ""
    counts = re.findall(r"(\d+) tokens ·", info)  # "prompt P tokens · G tokens · ..."
    generated = int(counts[1]) if len(counts) > 1 else None
    tps = (generated - 1) / (last - first) if generated and last > first else float("nan")
    return {"history": final, "ttft": first - tic, "tps": tps, "text": inference.message_text(final[-1]["content"])}


def load_test(url: str, args) -> None:
    alone = {p: turn(url, args.model, p, [], args.tokens)["text"] for p in PROMPTS[: args.clients]}
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        history: list = []
        sent: list[str] = []
        for t in range(args.turns):
            message = PROMPTS[(i + t) % len(PROMPTS)]
            try:
                out = turn(url, args.model, message, history, args.tokens)
            except Exception as e:  # noqa: BLE001 - counted and printed
                with lock:
                    errors.append(f"client {i} turn {t}: {type(e).__name__}: {e}")
                return
            sent.append(message)
            history = out["history"]
            users = [inference.message_text(m["content"]) for m in history if m["role"] == "user"]
            crossed = users != sent
            first_turn_differs = t == 0 and out["text"] != alone[message]
            with lock:
                results.append(out)
                if crossed or first_turn_differs:
                    errors.append(f"client {i} turn {t}: cross-talk (users {users}, sent {sent})")

    tic = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    ttft = sorted(r["ttft"] for r in results)
    tps = sorted(r["tps"] for r in results if r["tps"] == r["tps"])
    print(f"\nload: {args.clients} clients x {args.turns} turns, {args.tokens} tokens each, {args.model}")
    print(f"  replies {len(results)}/{args.clients * args.turns}, errors {len(errors)}, wall {wall:.1f} s")
    for e in errors:
        print(f"    {e}")
    print(f"  time to first token: p50 {pct(ttft, 50):.2f} s, p95 {pct(ttft, 95):.2f} s (queueing included)")
    print(f"  tokens/s per reply: p50 {pct(tps, 50):.1f}, p95 {pct(tps, 95):.1f}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def soak(url: str, pid: int, args, run_name: str | None) -> None:
    import httpx

    stop = threading.Event()
    samples: list[tuple[float, float]] = []

    turns, refreshes = [0], [0]

    def chatter() -> None:
        while not stop.is_set():
            turn(url, args.model, PROMPTS[turns[0] % len(PROMPTS)], [], args.tokens)
            turns[0] += 1

    def dashboard() -> None:
        while run_name and not stop.is_set():
            with httpx.Client(trust_env=False, timeout=60) as http:
                event = http.post(f"{url}/gradio_api/call/_show_now", json={"data": [run_name, False, 0.6]}).json()
                with http.stream("GET", f"{url}/gradio_api/call/_show_now/{event['event_id']}") as answer:
                    for _ in answer.iter_lines():
                        pass
            refreshes[0] += 1
            stop.wait(2.0)

    workers = [threading.Thread(target=chatter), threading.Thread(target=dashboard)]
    for w in workers:
        w.start()
    start = time.monotonic()
    end = start + args.soak_minutes * 60
    threads = [os_threads(pid)]
    while time.monotonic() < end:
        samples.append((time.monotonic() - start, rss_mb(pid)))
        time.sleep(SAMPLE_EVERY_S)
    samples.append((time.monotonic() - start, rss_mb(pid)))
    threads.append(os_threads(pid))
    stop.set()
    for w in workers:
        w.join()
    report_soak(samples, args, run_name, turns[0], refreshes[0])
    print(f"  app OS threads: {threads[0]} at the start, {threads[-1]} at the end")


def report_soak(samples: list[tuple[float, float]], args, run_name: str | None, turns: int, refreshes: int) -> None:
    """RSS every `--report-every` minutes, and its growth over the soak's second half (flat: about 0 MB/min)."""
    print(f"\nsoak: {args.soak_minutes} min of chat and a dashboard refresh every 2 s (run {run_name or 'none'})")
    print(f"  {turns} chat turns and {refreshes} dashboard refreshes through the HTTP API")
    step = max(1, round(args.report_every * 60 / SAMPLE_EVERY_S))
    marks = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    print("  app RSS: " + ", ".join(f"{t / 60:.0f} min {mb:.0f} MB" for t, mb in marks))
    half = [(t, mb) for t, mb in samples if t >= samples[-1][0] / 2]
    if len(half) >= 2:
        slope = statistics.linear_regression([t for t, _ in half], [mb for _, mb in half]).slope * 60
        print(f"  second half: {half[0][1]:.0f} -> {half[-1][1]:.0f} MB, least-squares growth {slope:+.2f} MB/min")
    if args.json:
        args.json.write_text(json.dumps({"rss_samples_s_mb": samples, "turns": turns, "refreshes": refreshes}))


def start_training(run_name: str) -> Path:
    """A long tiny-model run in FORGELLM_HOME's runs/ (stopped when the soak ends)."""
    import subprocess

    sets = ["iters=1000000", "save_every=100000", "steps_per_eval=500", "val_batches=1", f"run_name={run_name}"]
    argv = [sys.executable, "-m", "forgellm", "train", "configs/cpt-tiny.yaml"]
    argv += [arg for item in sets for arg in ("--set", item)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return Path(proc.stdout.readline().strip())


def open_browser(url: str):
    """Headless Chromium on the app's Monitoring tab (returns what to close)."""
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    browser = driver.chromium.launch(
        executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Monitoring").click()
    return driver, browser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--soak-minutes", type=float, default=5.0)
    parser.add_argument("--run", help="a run under runs/ for the soak's dashboard refreshes (default: the newest)")
    parser.add_argument("--train", action="store_true", help="train a long tiny-model run during the soak")
    parser.add_argument("--browser", action="store_true", help="keep Chromium open on Monitoring during the soak")
    parser.add_argument("--report-every", type=float, default=5.0, help="minutes between the RSS figures printed")
    parser.add_argument("--json", type=Path, help="write every RSS sample of the soak here")
    parser.add_argument("--skip-load", action="store_true", help="only the soak")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")
    listed = choices.run_choices()
    run_name = args.run or (listed[0][1] if listed else None)
    trained = browser = None
    if args.train and args.soak_minutes > 0:  # before the app starts: its run list (and API choices) holds it
        trained = start_training(f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
        run_name = trained.name
    port = free_port()
    proc = launch_app(port)
    url = f"http://127.0.0.1:{port}"
    try:
        if not args.skip_load:
            load_test(url, args)
        if args.soak_minutes > 0:
            if args.browser:
                browser = open_browser(url)
            soak(url, proc.pid, args, run_name)
    finally:
        if browser is not None:
            browser[1].close()
            browser[0].stop()
        if trained is not None:
            from forgellm import launcher

            launcher.stop(trained, wait_s=60)
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
