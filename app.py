"""Launch the ForgeLLM app: `python app.py [--host 127.0.0.1] [--port 7860] [--share]`.

On Hugging Face Spaces the platform sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; they are used when
no flag is given. Everything else lives in `forgellm.ui`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping

# Before gradio is imported: its analytics threads can hang a firewalled machine at exit.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import forgellm  # noqa: E402 - first: it loads a fast BLAS before anything imports mlx
import forgellm.platform  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv: list[str] | None = None, env: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """Flags first, then GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, then 127.0.0.1:7860."""
    parser = argparse.ArgumentParser(description="ForgeLLM: fine-tune LLMs with MLX from a browser.")
    parser.add_argument(
        "--host", default=None, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    args = parser.parse_args(argv)
    args.host = args.host or env.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    args.port = args.port or int(env.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    # Python's default SIGTERM exits without cleanup; Gradio closes its server on KeyboardInterrupt.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Build the app and serve it until interrupted (Ctrl-C or SIGTERM)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    forgellm.platform.warn_if_slow()  # once, with the fix, if MLX is left on its reference BLAS
    from forgellm.ui import CSS, build_app

    try:
        demo = build_app()
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS)
    except KeyboardInterrupt:
        pass  # a signal before the server was up: nothing to close
    return 0


if __name__ == "__main__":
    sys.exit(main())
