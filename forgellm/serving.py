"""`forgellm serve`: mlx-lm's OpenAI-compatible HTTP server for a base model and a run's checkpoint.

The server is mlx-lm's own (`mlx_lm.server`: `/v1/completions`, `/v1/chat/completions`, `/v1/models`),
run in this process after ForgeLLM has loaded its fast BLAS. ForgeLLM only chooses what it serves: the
model folder (`models.registry.resolve_model`), the checkpoint folder of a run (`runs.adapter_dir`, as
the chat and eval do) passed as `--adapter-path`, the chat template the run trained with when it stored
one, and the address: always 127.0.0.1. mlx-lm's server "only implements basic security checks" (its
words) and loads any model path a request names, so it is never exposed beyond this machine.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from . import runs
from .errors import ForgeError

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass
class ServePlan:
    model_path: Path
    adapter_dir: Path | None
    port: int
    argv: list[str]  # mlx_lm.server's arguments

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


def plan(
    model: str, adapter: str | Path | None = None, checkpoint: str = "best", port: int = DEFAULT_PORT
) -> ServePlan:
    """What `serve` will run, checked before anything starts.

    Raises:
        ForgeError: for a missing checkpoint, an adapter from another base model, or a port in use.
    """
    from .evaluation import check_adapter_base
    from .models.registry import resolve_model

    model_path = resolve_model(model)
    adapter_dir = runs.adapter_dir(Path(adapter), checkpoint).resolve() if adapter else None
    argv = ["--model", str(model_path), "--host", HOST, "--port", str(port)]
    if adapter_dir is not None:
        check_adapter_base(model, model_path, adapter_dir)
        argv += ["--adapter-path", str(adapter_dir)]
        template = runs.run_chat_template(adapter_dir)
        if template:
            argv += ["--chat-template", template]
    _require_free(port)
    return ServePlan(model_path, adapter_dir, port, argv)


def _require_free(port: int) -> None:
    if not 0 < port < 65536:
        raise ForgeError(f"port {port} is not a TCP port", "--port", "pick a port from 1024 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise ForgeError(
                f"port {port} on {HOST} is not free ({e.strerror or e})", "--port", "pick another port"
            ) from e


def serve(served: ServePlan) -> None:
    """Run mlx-lm's server in this process until interrupted (Ctrl-C or SIGTERM)."""
    from mlx_lm import server

    saved = sys.argv
    sys.argv = ["mlx_lm.server", *served.argv]  # mlx-lm's main() reads its arguments from sys.argv
    try:
        server.main()
    finally:
        sys.argv = saved
