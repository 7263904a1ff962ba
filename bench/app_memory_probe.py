"""Which traffic makes the app's memory grow? The app built and served in this process, one kind of traffic.

    FORGELLM_HOME=... python bench/app_memory_probe.py chat|dashboard|browser WARMUP CALLS [RUN] [--every N]

- `chat`: CALLS replies of the tiny model (8 new tokens, greedy) through the HTTP API (`/gradio_api/call`),
  each call a Gradio session of its own, as `gradio_client` or a script makes them;
- `dashboard`: CALLS Monitoring refreshes of RUN through the same API;
- `browser`: Chromium (/usr/bin/chromium) on the Monitoring tab for CALLS ticks of its 2 s timer (start a
  training run RUN beside it to make each tick draw).

The app keeps 64 sessions (as `--max-sessions 64`), so WARMUP calls (> 64) fill them first; then every N
calls it prints the process's RSS (after `gc.collect()`), its OS threads and the size of Gradio's tables
that grow per event or per API session. A growth that stays once those tables are full is a leak.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_PROXY", "127.0.0.1")

SESSIONS_KEPT = 64
CHROMIUM = "/usr/bin/chromium"


def proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def rss_mb() -> float:
    gc.collect()
    return proc_status("VmRSS") / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traffic", choices=["chat", "dashboard", "browser"])
    parser.add_argument("warmup", type=int, help="calls (ticks for browser) before measuring")
    parser.add_argument("calls", type=int, help="calls (ticks) measured")
    parser.add_argument("run", nargs="?", help="the run Monitoring shows (dashboard, browser)")
    parser.add_argument("--every", type=int, default=0, help="print every N calls (default: once at the end)")
    args = parser.parse_args()

    import httpx

    from forgellm import choices, inference
    from forgellm.ui import CSS, build_app, chat

    demo = build_app()
    port = free_port()
    demo.queue().launch(
        server_port=port, prevent_thread_lock=True, state_session_capacity=SESSIONS_KEPT, css=CSS, quiet=True
    )
    url = f"http://127.0.0.1:{port}"
    settings = vars(inference.GenerationSettings(max_tokens=8, temperature=0.0))
    chat_inputs = ["The queen", [], [], False, "tiny", choices.NO_ADAPTER, None, "", "{{ messages[-1]['content'] }}"]
    chat_inputs += [settings[name] for name in chat.SETTING_FIELDS]

    def call(http: httpx.Client, route: str, data: list) -> None:
        event = http.post(f"{url}/gradio_api/call/{route}", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"{url}/gradio_api/call/{route}/{event}") as answer:
            for _ in answer.iter_lines():
                pass

    def traffic(n: int) -> None:
        if args.traffic == "browser":
            time.sleep(n * 2.0)  # the page's own timer makes the calls
            return
        with httpx.Client(trust_env=False, timeout=120) as http:
            for _ in range(n):
                if args.traffic == "chat":
                    call(http, "_respond", chat_inputs)
                else:
                    call(http, "_show_now", [args.run, False, 0.6])

    if args.traffic == "browser":
        from playwright.sync_api import sync_playwright

        driver = sync_playwright().start()
        flags = ["--no-sandbox", "--disable-gpu"]
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page()
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Monitoring").click()

    traffic(args.warmup)
    start_mb, start = rss_mb(), time.monotonic()
    print(f"{args.traffic}: after {args.warmup} warm-up calls RSS {start_mb:.0f} MB", flush=True)
    every = args.every or args.calls
    done = 0
    while done < args.calls:
        n = min(every, args.calls - done)
        traffic(n)
        done += n
        queue = demo._queue
        print(
            f"  {done} calls: RSS {rss_mb():.0f} MB, {time.monotonic() - start:.0f} s, {proc_status('Threads')} OS"
            f" threads, Gradio: {len(demo.state_holder.session_data)} sessions,"
            f" {len(queue.pending_messages_per_session)} message queues, {len(queue.event_analytics)} event records",
            flush=True,
        )
    end_mb = rss_mb()
    print(f"{args.traffic}: {start_mb:.0f} -> {end_mb:.0f} MB over {args.calls} calls "
          f"({1024 * (end_mb - start_mb) / args.calls:+.1f} KB a call)")  # fmt: skip
    os._exit(0)  # the server, the browser and MLX's threads: nothing to tidy


if __name__ == "__main__":
    main()
