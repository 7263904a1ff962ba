"""How much memory and time a training run will take, shown before Start.

Memory is estimated without loading any weights: the model's shape comes from its config.json and the
safetensors headers (names, dtypes and shapes of every tensor as stored), and the run's parts follow
from the config: weights, trainable parameters, their gradients and optimizer state, the activations
kept for the backward pass and the loss's logits. The activation coefficients were calibrated against
MLX's own peak (`mx.get_peak_memory()`, which the trainer logs as `peak_memory_gb`) in real short runs
(bench/estimate_bench.py; figures in BENCHMARKS.md).

Time is measured, not modelled: a probe runs the real trainer for a few steps in a subprocess, and the
planned run is scaled from its steady step time and one evaluation. A running run's own first steps give
the same estimate from its metrics.

Nothing here imports Gradio. The memory estimate imports MLX only to ask a Metal GPU how much memory it may
use (and, for the QLoRA suggestion, whether MLX runs on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import launcher, runs
from .config import EarlyStopping, TrainConfig
from .errors import ForgeError
from .models import registry
from .models.quantization import QUANTIZATION_KEYS, builtin_name, config_is_quantized
from .paths import PROJECT_ROOT

GB = 1e9
FLOAT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}  # safetensors dtypes a model computes in
LAYER_NAME = re.compile(r"^(?P<prefix>.*?\blayers)\.(?P<index>\d+)\.(?P<rest>.+)$")


# ---- the model as stored -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, as stored."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelShape:
    """What the estimate needs to know about a base model: its config.json and its tensors (no data)."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, Tensor]

    def _get(self, *keys: str, default: int | None = None) -> int:
        for key in keys:  # most models name these like llama; some (GPT-2 style) use other names
            value = self.config.get(key) or (self.config.get("text_config") or {}).get(key)
            if value:
                return int(value)
        if default is None:
            raise ForgeError(f"config.json has none of {', '.join(keys)}", str(self.folder / "config.json"))
        return default

    @property
    def hidden(self) -> int:
        return self._get("hidden_size", "n_embd", "d_model")

    @property
    def num_layers(self) -> int:
        found = max(self.layer_indices(), default=-1) + 1
        return self._get("num_hidden_layers", "n_layer", "num_layers", default=found)

    @property
    def heads(self) -> int:
        return self._get("num_attention_heads", "n_head")

    @property
    def intermediate(self) -> int:
        return self._get("intermediate_size", "n_inner", default=4 * self.hidden)

    @property
    def vocab(self) -> int:
        return self._get("vocab_size")

    @property
    def quantized(self) -> bool:
        return config_is_quantized(self.config)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def compute_bytes(self) -> int:
        """Bytes per element of the activations: the float dtype holding most of the weights (for a quantized
        model, its scales'), which mlx-lm computes in."""
        by_dtype: dict[str, int] = {}
        for tensor in self.tensors.values():
            if tensor.dtype in FLOAT_BYTES:
                by_dtype[tensor.dtype] = by_dtype.get(tensor.dtype, 0) + tensor.nbytes
        return FLOAT_BYTES[max(by_dtype, key=by_dtype.get)] if by_dtype else 4

    def layer_indices(self) -> set[int]:
        return {int(m["index"]) for name in self.tensors if (m := LAYER_NAME.match(name))}

    def group_size(self, module: str) -> int:
        """The quantization group size of `module` (a per-module entry overrides the model's default)."""
        quant = next((self.config[k] for k in QUANTIZATION_KEYS if self.config.get(k)), {})
        own = quant.get(module)
        return int((own if isinstance(own, dict) else quant).get("group_size", 64))


def read_safetensors_header(path: Path) -> dict[str, Tensor]:
    """Tensor names, dtypes and shapes of one .safetensors file, from its JSON header (no weights read)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ForgeError("not a safetensors file (shorter than its header)", str(path), "re-download the model")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:  # a header is a few MB at most; anything else is not safetensors
            raise ForgeError("not a safetensors file (implausible header length)", str(path), "re-download the model")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ForgeError(f"unreadable safetensors header ({e})", str(path), "re-download the model") from e
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = Tensor(info["dtype"], tuple(info["shape"]), end - start)
    return out


def read_model_shape(folder: Path) -> ModelShape:
    """config.json and every weight file's header of a model folder."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ForgeError(f"cannot read config.json ({e})", str(folder), "point at an mlx-lm/HF model folder") from e
    files = sorted(p for p in folder.glob("*.safetensors") if p.name != runs.ADAPTER_FILE)
    if not files:
        raise ForgeError("no .safetensors weights in the model folder", str(folder), "use an mlx-lm/HF model folder")
    tensors: dict[str, Tensor] = {}
    for path in files:
        tensors.update(read_safetensors_header(path))
    return ModelShape(folder, config, tensors)


def model_folder(model: str) -> Path:
    """The local folder of `model` as the trainer would resolve it, without downloading anything.

    A built-in model not built yet is built (seconds, offline); a Hub id must already be in the local
    Hugging Face cache (the trainer downloads it when the run starts).
    """
    name = model.strip()
    builtin = builtin_name(name)
    if builtin is not None and _comes_from_the_hub(builtin):
        return _downloaded_folder(registry.BUILTINS[builtin].hub_id or name)
    if builtin is not None or registry.local_folder(name) is not None:
        return registry.resolve_model(name)
    if registry.looks_like_hub_id(name):
        return _downloaded_folder(name)
    return registry.resolve_model(name)  # raises the registry's own "not found" error


def _comes_from_the_hub(builtin: str) -> bool:
    """True for the built-in the trainer would download (not built, and the wheel it is built from is absent)."""
    built = (registry.builtin_path(builtin) / "config.json").is_file()
    return builtin == registry.HUB_FALLBACK and not built and not registry.smollm_wheel_installed()


def _downloaded_folder(repo_id: str) -> Path:
    cached = _hub_cache_folder(repo_id)
    if cached is None:
        raise ForgeError(
            f"{repo_id!r} is not downloaded yet, so its size is not known here",
            "model",
            f"start the run once (it downloads the model) or run `hf download {repo_id}`, then estimate again",
        )
    return cached


def _hub_cache_folder(repo_id: str) -> Path | None:
    """The cached snapshot of a Hub repo when its config.json and weights are in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:
        return None
    if not isinstance(cached, str):
        return None
    folder = Path(cached).parent
    return folder if any(folder.glob("*.safetensors")) else None


# ---- what training makes trainable -------------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """A weight matrix (Linear, Embedding or a stack of expert matrices), as mlx-lm's LoRA sees it."""

    name: str  # module path, e.g. model.layers.3.self_attn.q_proj
    in_dims: int
    out_dims: int
    experts: int = 1


def linear_modules(shape: ModelShape) -> dict[str, Linear]:
    """Every module holding a weight matrix, with its input and output widths (quantized: as unpacked)."""
    out = {}
    for name, tensor in shape.tensors.items():
        if not name.endswith(".weight") or len(tensor.shape) < 2:
            continue
        module = name[: -len(".weight")]
        scales = shape.tensors.get(module + ".scales")
        in_dims = scales.shape[-1] * shape.group_size(module) if scales else tensor.shape[-1]
        experts = tensor.shape[0] if len(tensor.shape) == 3 else 1
        out[module] = Linear(module, in_dims, tensor.shape[-2], experts)
    return out


def adapted_layers(shape: ModelShape, num_layers: int) -> list[int]:
    """Indices of the blocks `num_layers` adapts: the last N, or all for -1 (mlx-lm's rule)."""
    count = shape.num_layers
    return list(range(count)) if num_layers < 0 else list(range(max(0, count - num_layers), count))


def _split_layer_name(module: str) -> tuple[int, str] | None:
    match = LAYER_NAME.match(module)
    return (int(match["index"]), match["rest"]) if match else None


def lora_targets(shape: ModelShape, cfg: TrainConfig) -> list[Linear]:
    """The modules `linear_to_lora_layers` replaces: `keys` (or every matrix of a block) in the adapted blocks,
    plus model-level modules a key names exactly (e.g. lm_head)."""
    modules = linear_modules(shape)
    keys = cfg.lora_parameters.keys
    if keys is None:  # mlx-lm: every Linear/Embedding found in any block
        keys = [split[1] for name in modules if (split := _split_layer_name(name))]
    wanted, layers = set(keys), set(adapted_layers(shape, cfg.num_layers))
    targets = []
    for name, linear in modules.items():
        split = _split_layer_name(name)
        in_block = split is not None and split[0] in layers and split[1] in wanted
        if in_block or name in wanted:
            targets.append(linear)
    return targets


@dataclass(frozen=True)
class Trainable:
    """What the optimizer updates: parameter count and bytes (the dtype they train in)."""

    count: int
    nbytes: int


def trainable_parameters(shape: ModelShape, cfg: TrainConfig) -> Trainable:
    """The parameters `make_trainable` leaves trainable, counted from the stored shapes.

    LoRA adds A (in x r) and B (r x out) per adapted matrix, in float32 whatever the base dtype (mlx-lm
    creates them so); DoRA adds a magnitude per output. Full trains every stored weight of the adapted
    blocks (with num_layers -1: every weight, embeddings included), in its stored dtype.
    """
    if cfg.fine_tune_type == "full":
        if shape.quantized:
            raise ForgeError(
                "full fine-tuning needs a non-quantized base model",
                "fine_tune_type",
                "use fine_tune_type: lora (QLoRA) or a float model such as smollm2-135m-instruct",
            )
        layers = set(adapted_layers(shape, cfg.num_layers))
        chosen = [
            t
            for name, t in shape.tensors.items()
            if cfg.num_layers < 0 or ((split := _split_layer_name(name)) is not None and split[0] in layers)
        ]
        return Trainable(sum(t.size for t in chosen), sum(t.nbytes for t in chosen))
    rank = cfg.lora_parameters.rank
    count = 0
    for linear in lora_targets(shape, cfg):
        count += linear.experts * rank * (linear.in_dims + linear.out_dims)
        if cfg.fine_tune_type == "dora":
            count += linear.out_dims
    if not count:
        raise ForgeError(
            "no parameter would be made trainable",
            "lora_parameters.keys",
            "name modules that exist, e.g. self_attn.q_proj",
        )
    return Trainable(count, 4 * count)


# ---- a probe: the real trainer for a few steps ---------------------------------------------------------

PROBE_TIMEOUT_S = 1800.0
NEVER = 10**9  # steps_per_eval / save_every for the probe: only the evaluations at 0 and at the end


@dataclass
class Probe:
    """What a short real run measured (one process, the planned config's shapes)."""

    steps: int
    step_s: list[float]  # per step; the first includes compilation
    step_tokens: list[int]  # trained positions per step
    eval_s: list[float]  # each validation the probe ran (of one batch: before step 1 and after the last)
    peak_memory_bytes: int | None  # MLX's peak, as the trainer logs it
    max_rss_bytes: int | None  # the whole trainer process (Python, libraries, data) at its largest
    wall_s: float  # the subprocess from start to exit
    train_rows: int
    val_rows: int

    @property
    def eval_batch_s(self) -> float:
        """One validation batch: the quickest of the probe's (a busy machine only ever adds time)."""
        return min(self.eval_s, default=0.0)

    @property
    def steady_step_s(self) -> float:
        """The median step after the first (which compiles); the first when it is all there is."""
        return statistics.median(self.step_s[1:] or self.step_s)


def probe_config(cfg: TrainConfig, steps: int, output_dir: Path) -> TrainConfig:
    """`cfg` cut down to `steps` steps in one process: evaluations of one batch at 0 and at the end, one save."""
    return dataclasses.replace(
        cfg,
        iters=steps,
        epochs=None,
        steps_per_report=1,
        steps_per_eval=NEVER,
        save_every=NEVER,
        val_batches=1,
        early_stopping=EarlyStopping(),  # a probe never stops early
        output_dir=str(output_dir),
        run_name="probe",
        hosts=None,
        hostfile=None,
    )


def run_probe(cfg: TrainConfig, steps: int = 3, timeout_s: float = PROBE_TIMEOUT_S) -> Probe:
    """Train `cfg` for `steps` steps in a subprocess (as the app starts trainers) and read what it measured.

    The run lives in a temporary folder made here and deleted afterwards (only that folder).
    """
    if steps < 1:
        raise ValueError("a probe needs at least one step")
    tmp = Path(tempfile.mkdtemp(prefix="forgellm-probe-"))
    try:
        run_dir = launcher.create_run(probe_config(cfg, steps, tmp))
        wall_s, rusage = _train_and_wait(run_dir, timeout_s)
        return _read_probe(run_dir, steps, wall_s, rusage)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train_and_wait(run_dir: Path, timeout_s: float) -> tuple[float, Any]:
    """Run the trainer on `run_dir`; its wall time and resource usage (os.wait4: this child's own max RSS)."""
    start = time.monotonic()
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            launcher.trainer_argv(run_dir, resume=False),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=launcher.trainer_env(),
        )
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - start > timeout_s:
                raise ForgeError(f"the probe run took longer than {timeout_s:.0f} s", str(run_dir), "probe fewer steps")
            time.sleep(0.05)
    except BaseException:
        if proc.returncode is None:  # timed out or interrupted: end the trainer this probe started
            proc.kill()
            proc.wait()
        raise
    wall_s = time.monotonic() - start
    if proc.returncode != 0:
        status = runs.read_status(run_dir)
        raise ForgeError(
            f"the probe run failed: {status.error or 'exit code ' + str(proc.returncode)}",
            "estimate",
            "fix the config until a run starts; the trainer said:\n" + runs.tail_log(run_dir, 15),
        )
    return wall_s, rusage


def _max_rss_bytes(rusage: Any) -> int:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return int(rusage.ru_maxrss) * (1 if os.uname().sysname == "Darwin" else 1024)


def _read_probe(run_dir: Path, steps: int, wall_s: float, rusage: Any) -> Probe:
    records = runs.read_metrics(run_dir)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    step_s, step_tokens, previous = [], [], 0
    for record in train:
        tokens = (record.trained_tokens or 0) - previous
        previous = record.trained_tokens or 0
        step_tokens.append(tokens)
        step_s.append(tokens / record.tokens_per_sec if record.tokens_per_sec else 0.0)
    peaks = [r.peak_memory_gb for r in train if r.peak_memory_gb is not None]
    report = json.loads((run_dir / runs.DATA_REPORT_FILE).read_text(encoding="utf-8"))
    splits = report.get("splits") or {}
    return Probe(
        steps=steps,
        step_s=step_s,
        step_tokens=step_tokens,
        eval_s=[r.val_time_s for r in val if r.val_time_s is not None],
        peak_memory_bytes=round(max(peaks) * GB) if peaks else None,
        max_rss_bytes=_max_rss_bytes(rusage),
        wall_s=wall_s,
        train_rows=int((splits.get("train") or {}).get("rows", 0)),
        val_rows=int((splits.get("val") or {}).get("rows", 0)),
    )


# ---- memory ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activations:
    """Element counts per micro-batch that the activation memory scales with (see `ACTIVATION_COEFFICIENTS`)."""

    blocks: float  # tokens x backward blocks x block width: what each block keeps for the backward pass
    lora: float  # tokens x the output widths of the adapted matrices (LoRA keeps x·A·B and its scaled copy)
    dropout: float  # tokens x the input widths of the adapted matrices, with LoRA dropout: each keeps a masked copy
    attention: float  # tokens x backward blocks x heads x sequence: the attention probabilities kept
    inputs: float  # tokens x backward blocks x hidden: the block inputs gradient checkpointing keeps
    one_block: float  # tokens x block width (+ heads x sequence): the block being recomputed or differentiated
    logits: float  # tokens x vocabulary: logits, their float32 copy, softmax and gradient for the loss
    dora: float  # the adapted matrices' elements: DoRA rebuilds and normalises each weight every step
    tokens: float  # tokens of the micro-batch: what the fit finds per token beyond the counts above


def block_width(shape: ModelShape) -> int:
    """Elements per token a llama-style block computes: hidden-, query-, key/value- and MLP-sized results."""
    hidden, heads = shape.hidden, shape.heads
    head_dim = int(shape.config.get("head_dim") or hidden // heads)
    kv = int(shape.config.get("num_key_value_heads") or heads) * head_dim
    return 7 * hidden + 4 * heads * head_dim + 3 * kv + 5 * shape.intermediate


def backward_blocks(shape: ModelShape, cfg: TrainConfig) -> int:
    """Blocks the backward pass goes through: from the lowest block holding a trainable parameter to the top.

    Blocks below it only run forward, so their activations are freed as soon as the next block has run.
    """
    if cfg.fine_tune_type == "full":
        return shape.num_layers if cfg.num_layers < 0 else min(cfg.num_layers, shape.num_layers)
    blocks = [split[0] for t in lora_targets(shape, cfg) if (split := _split_layer_name(t.name))]
    return shape.num_layers - min(blocks) if blocks else 0


def activation_counts(shape: ModelShape, cfg: TrainConfig) -> Activations:
    """What the activation memory of one micro-batch of batch_size x max_seq_length tokens scales with (per
    process: a run on several hosts gives each its share of the batch)."""
    rows = max(1, cfg.batch_size // max(1, len(cfg.hosts or [])))
    tokens, seq = rows * cfg.max_seq_length, cfg.max_seq_length
    blocks = backward_blocks(shape, cfg)
    targets = lora_targets(shape, cfg) if cfg.fine_tune_type != "full" else []
    width, attention = block_width(shape), shape.heads * seq
    checkpointed = cfg.grad_checkpoint
    return Activations(
        blocks=0.0 if checkpointed else tokens * blocks * width,
        lora=0.0 if checkpointed else tokens * sum(t.out_dims * t.experts for t in targets),
        dropout=0.0 if checkpointed or not cfg.lora_parameters.dropout else tokens * sum(t.in_dims for t in targets),
        attention=0.0 if checkpointed else tokens * blocks * attention,
        inputs=tokens * blocks * shape.hidden if checkpointed else 0.0,
        one_block=tokens * (width + attention) if checkpointed else 0.0,
        logits=tokens * shape.vocab,
        dora=sum(t.in_dims * t.out_dims * t.experts for t in targets) if cfg.fine_tune_type == "dora" else 0.0,
        tokens=tokens,
    )


# Bytes per counted element (float32), fitted by least squares of the relative error, every coefficient at
# least its floor below, to MLX's measured peak in 85 one-step runs of the tiny model and SmolLM2-135M (LoRA,
# DoRA, QLoRA, full; batch x length from 1 x 64 to 16 x 64 and 1 x 1024; num_layers, keys, LoRA dropout; with
# and without grad_checkpoint): `python bench/estimate_bench.py --fit`. Estimate / measured ran from 0.88 to
# 1.23 over them, 0.96-1.03 on configs the fit never saw (BENCHMARKS.md). Full fine-tuning and LoRA keep
# different things for the backward pass, so each has its own coefficients; LoRA dropout with checkpointing
# and 16-bit models were not measured.
ACTIVATION_COEFFICIENTS: dict[tuple[str, bool], dict[str, float]] = {
    ("lora", False): {
        **{"blocks": 2.39, "lora": 1.8, "dropout": 5.17, "attention": 5.26, "logits": 15.06, "dora": 3.65},
        "tokens": 17366,
    },
    ("lora", True): {"inputs": 8.13, "one_block": 12.21, "logits": 4.0},
    ("full", False): {"blocks": 2.3, "attention": 5.35, "logits": 10.16, "tokens": 37002},
    ("full", True): {"inputs": 4.0, "one_block": 10.95, "logits": 9.8},
}
# `tokens` is bytes per token of the micro-batch that the counts do not explain (whatever the model's size:
# 18-37 kB, which matters on the tiny model and hardly on larger ones).
# The optimizer update's own temporaries and MLX's buffers, on top of every gradient at once: the smallest
# excess of the measured peak over weights + optimizer state + gradients among runs whose peak is the update
# (6.6 MB on the tiny model, 34 MB on SmolLM2; the fit found no fixed part in the backward pass).
OVERHEAD_BYTES = 6_600_000
# What the backward pass must keep at the least, in bytes per counted element (float32), whatever the fit
# says: a block keeps its input, both norms' outputs, the rotated queries and keys, the values, the
# attention output, gate, up and their product (4 H + 2 Hq + 2 KV + 3 I = 0.58 of `block_width` for
# SmolLM2: 2.3 bytes per element); checkpointing keeps each block's input; the loss holds float32 logits.
# The fit can only add to these, so a model unlike the calibrated ones is not underestimated by much.
ACTIVATION_FLOORS = {"blocks": 2.3, "inputs": 4.0, "one_block": 2.3, "logits": 4.0}
# Outside MLX's own memory: the Python interpreter, MLX, transformers and the tokenizer, and the tokenized
# data. The trainer's max resident size minus MLX's peak over the calibration runs: median 0.12 GB, up to
# 0.5 GB with grad_checkpoint (MLX's buffer cache holds the recomputed blocks' buffers); FIT_MARGIN covers that.
RUNTIME_BYTES = int(0.2 * GB)
# The estimate must stay below what the machine has by this share of itself to count as fitting: the
# calibration runs scatter about it (BENCHMARKS.md), and MLX's buffer cache can hold more than its peak.
FIT_MARGIN = 0.15


def _family(cfg: TrainConfig) -> tuple[str, bool]:
    return ("full" if cfg.fine_tune_type == "full" else "lora", cfg.grad_checkpoint)


def activation_bytes(shape: ModelShape, cfg: TrainConfig) -> int:
    """What the forward and backward pass of one micro-batch keep at the peak, in bytes.

    The coefficients were measured on float32 models; a model computing in 16 bits keeps its activations
    in half the bytes (not calibrated here), while the loss still casts the logits to float32.
    """
    coefficients = ACTIVATION_COEFFICIENTS[_family(cfg)]
    counts = dataclasses.asdict(activation_counts(shape, cfg))
    scale = shape.compute_bytes / 4
    return int(sum(c * counts[name] * (1 if name == "logits" else scale) for name, c in coefficients.items()))


def optimizer_copies(cfg: TrainConfig) -> int:
    """Optimizer state per trainable parameter: Adam/AdamW keep two moments; MLX's SGD keeps a velocity
    even without momentum (it always allocates it)."""
    return 1 if cfg.optimizer == "sgd" else 2


@dataclass
class MachineMemory:
    """What the machine offers a training run."""

    available: int | None  # bytes a run may use now (None: unknown)
    total: int | None
    source: str  # where the figure comes from, for the summary


@dataclass
class MemoryEstimate:
    """The estimated MLX peak of a training step, its parts, and whether the machine has room for it.

    The peak is weights + LoRA parameters + optimizer state + the larger of two moments of the step: the
    backward pass (activations, plus gradients held from earlier micro-batches) or the optimizer update
    (every gradient at once, plus the update's small fixed overhead). `total` adds what the process needs
    outside MLX.
    """

    cfg: TrainConfig
    shape: ModelShape
    trainable_count: int
    weights: int
    adapters: int  # LoRA/DoRA parameters (full fine-tuning trains the weights themselves)
    optimizer: int
    gradients: int
    held_gradients: int  # gradients kept while the next micro-batch runs (grad_accumulation_steps > 1)
    activations: int
    overhead: int
    machine: MachineMemory
    runtime: int = RUNTIME_BYTES

    @property
    def backward_phase(self) -> int:
        return self.held_gradients + self.activations

    @property
    def update_phase(self) -> int:
        return self.gradients + self.overhead

    @property
    def peak(self) -> int:
        """The estimate of MLX's peak memory (what the trainer logs as peak_memory_gb)."""
        moment = max(self.backward_phase, self.update_phase)
        return self.weights + self.adapters + self.optimizer + moment

    @property
    def total(self) -> int:
        return self.peak + self.runtime

    @property
    def available(self) -> int | None:
        return self.machine.available

    @property
    def fits(self) -> bool:
        """True when the whole process, plus a margin, fits in what the machine has (or that is unknown)."""
        return self.available is None or self.total * (1 + FIT_MARGIN) <= self.available

    def parts(self) -> list[tuple[str, int]]:
        """The parts of the peak, in bytes; they add up to `peak`."""
        out = [("weights", self.weights)]
        if self.adapters:
            out.append(({"lora": "LoRA", "dora": "DoRA"}[self.cfg.fine_tune_type] + " parameters", self.adapters))
        out.append(("optimizer state", self.optimizer))
        if self.backward_phase >= self.update_phase:
            tokens = f"{self.cfg.batch_size} x {self.cfg.max_seq_length} tokens"
            out.append((f"activations ({tokens})", self.activations))
            if self.held_gradients:
                out.append(("accumulated gradients", self.held_gradients))
        else:  # the optimizer update, with every gradient at once, is the larger moment
            out += [("gradients", self.gradients), ("update overhead", self.overhead)]
        return out

    def suggestions(self) -> list[Suggestion]:
        """Changes that bring the run within the machine's memory, each with its re-estimated peak.

        Empty when the run fits. Otherwise the changes that fit come first, least disruptive first, then
        those that only help (smallest first); a change that would not lower the estimate is left out.
        """
        if self.fits:
            return []
        found = [s for s in _candidate_changes(self) if s.estimate.total < self.total]
        return sorted(found, key=lambda s: (not s.estimate.fits, s.rank if s.estimate.fits else s.estimate.total))


@dataclass
class Suggestion:
    """One change to the config and its estimate."""

    change: str  # what to change, in words a user types: "batch_size: 2, grad_accumulation_steps: 2"
    overrides: dict[str, Any]  # the same change as TrainConfig fields, e.g. {"grad_checkpoint": True}
    estimate: MemoryEstimate
    note: str = ""  # its cost: slower steps, shorter windows, ...
    rank: int = 0  # how disruptive it is (lower first)


def estimate_memory(cfg: TrainConfig, available: int | None = None) -> MemoryEstimate:
    """The memory a training run of `cfg` will need at its peak, from the model's files (no weights loaded).

    Args:
        cfg: The run's config.
        available: Bytes the run may use; None reads the machine (see `machine_memory`).

    Raises:
        ForgeError: when the model cannot be found, is a Hub id not downloaded yet, or its files are unreadable.
    """
    shape = read_model_shape(model_folder(cfg.model))
    machine = machine_memory() if available is None else MachineMemory(available, None, "given")
    return estimate_for_shape(shape, cfg, machine)


def estimate_for_shape(shape: ModelShape, cfg: TrainConfig, machine: MachineMemory) -> MemoryEstimate:
    """`estimate_memory` for a model already read (suggestions re-estimate many configs of one model)."""
    trainable = trainable_parameters(shape, cfg)
    adapters = 0 if cfg.fine_tune_type == "full" else trainable.nbytes
    return MemoryEstimate(
        cfg=cfg,
        shape=shape,
        trainable_count=trainable.count,
        weights=shape.weight_bytes,
        adapters=adapters,
        optimizer=optimizer_copies(cfg) * trainable.nbytes,
        gradients=trainable.nbytes,
        held_gradients=trainable.nbytes if cfg.grad_accumulation_steps > 1 else 0,
        activations=activation_bytes(shape, cfg),
        overhead=min(OVERHEAD_BYTES, trainable.nbytes),  # LoRA's update is as small as its gradients
        machine=machine,
    )


def machine_memory() -> MachineMemory:
    """What a run may use here: a Metal GPU's recommended working set, else the OS's available memory."""
    gpu = _metal_working_set()
    if gpu is not None:
        return gpu
    meminfo = _linux_meminfo()
    if meminfo is not None:
        return meminfo
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return MachineMemory(None, None, "unknown")
    return MachineMemory(total, total, "physical memory")


def _metal_working_set() -> MachineMemory | None:
    """On Apple silicon MLX allocates from the GPU's working set; macOS recommends a ceiling for it."""
    try:
        import mlx.core as mx

        if not mx.metal.is_available():
            return None
        info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
    except (AttributeError, RuntimeError, ImportError):  # an MLX without these calls, or no Metal device
        return None
    limit = info.get("max_recommended_working_set_size")
    if not limit:
        return None
    total = info.get("memory_size")
    return MachineMemory(int(limit), int(total) if total else None, "Metal's recommended working set")


def _linux_meminfo(path: Path = Path("/proc/meminfo")) -> MachineMemory | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024  # kB
    if "MemAvailable" not in values:
        return None
    return MachineMemory(values["MemAvailable"], values.get("MemTotal"), "MemAvailable in /proc/meminfo")


# ---- suggestions -----------------------------------------------------------------------------------------


def _candidate_changes(memory: MemoryEstimate) -> list[Suggestion]:
    """Every usual change that lowers memory, each estimated; `suggestions` keeps and orders the useful ones.

    When no single change fits, each is also tried together with gradient checkpointing.
    """
    single = [_checkpointing(memory), *_changes_besides_checkpointing(memory)]
    found = [c for c in single if c is not None]
    checkpointing = found[0] if found and "grad_checkpoint" in found[0].overrides else None
    if checkpointing is None or any(c.estimate.fits for c in found):
        return found
    for change in _changes_besides_checkpointing(checkpointing.estimate):
        if change is not None:
            overrides = {"grad_checkpoint": True, **change.overrides}
            note = f"{change.note}; checkpointing makes steps slower"
            found.append(Suggestion(_as_change(overrides), overrides, change.estimate, note, change.rank + 10))
    return found


def _changes_besides_checkpointing(memory: MemoryEstimate) -> list[Suggestion | None]:
    return [
        _smaller_batch(memory),
        _shorter_windows(memory),
        _fewer_blocks(memory),
        _lora_instead_of_full(memory),
        _quantized_base(memory),
    ]


def _suggest(
    memory: MemoryEstimate, overrides: dict[str, Any], note: str, rank: int, shape: ModelShape | None = None
) -> Suggestion | None:
    try:
        estimate = estimate_for_shape(shape or memory.shape, _with_overrides(memory.cfg, overrides), memory.machine)
    except ForgeError:  # a change this model does not allow (e.g. full fine-tuning of a quantized base)
        return None
    return Suggestion(_as_change(overrides), overrides, estimate, note, rank)


def _checkpointing(memory: MemoryEstimate) -> Suggestion | None:
    if memory.cfg.grad_checkpoint:
        return None
    return _suggest(memory, {"grad_checkpoint": True}, "each step recomputes activations, so it is slower", 0)


def _smaller_batch(memory: MemoryEstimate) -> Suggestion | None:
    """A divisor of batch_size with more accumulation steps: the same rows per optimizer step."""
    cfg = memory.cfg

    def change(batch: int) -> dict[str, Any]:
        return {"batch_size": batch, "grad_accumulation_steps": cfg.grad_accumulation_steps * cfg.batch_size // batch}

    divisors = [b for b in range(cfg.batch_size - 1, 0, -1) if cfg.batch_size % b == 0]
    batch = _first_that_fits(memory, divisors, change)
    return None if batch is None else _suggest(memory, change(batch), "the same update, in more micro-batches", 1)


def _shorter_windows(memory: MemoryEstimate) -> Suggestion | None:
    lengths = _halvings(memory.cfg.max_seq_length, floor=64)
    length = _first_that_fits(memory, lengths, lambda n: {"max_seq_length": n})
    note = "shorter training windows (IFT: longer examples are dropped or cut)"
    return None if length is None else _suggest(memory, {"max_seq_length": length}, note, 2)


def _fewer_blocks(memory: MemoryEstimate) -> Suggestion | None:
    current = memory.shape.num_layers if memory.cfg.num_layers < 0 else memory.cfg.num_layers
    blocks = _first_that_fits(memory, _halvings(current, floor=1), lambda n: {"num_layers": n})
    note = "trains only the last blocks"
    return None if blocks is None else _suggest(memory, {"num_layers": blocks}, note, 3)


def _lora_instead_of_full(memory: MemoryEstimate) -> Suggestion | None:
    if memory.cfg.fine_tune_type != "full":
        return None
    return _suggest(memory, {"fine_tune_type": "lora"}, "trains low-rank adapters instead of every weight", 4)


def _quantized_base(memory: MemoryEstimate) -> Suggestion | None:
    """QLoRA on the 4-bit built-in made from this float built-in, when there is one."""
    from .models.quantization import quantized_cpu_warning

    name = builtin_name(memory.cfg.model)
    quantized = next((m.name for m in registry.BUILTINS.values() if name and m.float_build == name), None)
    if quantized is None:
        return None
    try:
        shape = read_model_shape(model_folder(quantized))  # a built-in: built here in seconds if need be
    except ForgeError:  # e.g. the wheel it is built from is not installed
        return None
    on_cpu = quantized_cpu_warning(quantized) is not None
    slow = "; MLX runs on the CPU here, where it trains several times slower" if on_cpu else ""
    overrides = {"model": quantized, **({"fine_tune_type": "lora"} if memory.cfg.fine_tune_type == "full" else {})}
    return _suggest(memory, overrides, f"QLoRA on the 4-bit build{slow}", 5, shape)


def _halvings(value: int, floor: int) -> list[int]:
    """value/2, value/4, ... down to `floor` (included), largest first."""
    out = []
    while value > floor:
        value = max(floor, value // 2)
        out.append(value)
    return out


def _first_that_fits(memory: MemoryEstimate, values: list[int], change: Any) -> int | None:
    """The first of `values` (largest first) whose config fits; else the last one, the most it can help."""
    for value in values:
        try:
            if estimate_for_shape(memory.shape, _with_overrides(memory.cfg, change(value)), memory.machine).fits:
                return value
        except ForgeError:
            return None
    return values[-1] if values else None


def _with_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    return dataclasses.replace(cfg, **overrides)


def _as_change(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {json.dumps(value)}" for key, value in overrides.items())


# ---- time ------------------------------------------------------------------------------------------------


@dataclass
class TimeEstimate:
    """How long a run takes: measured steps and evaluations scaled to the planned length."""

    total_s: float  # the whole run, start-up included
    steps: int  # optimizer steps planned
    step_s: float  # one step, steady state
    tokens_per_sec: float | None  # trained tokens per second in those steps
    evaluations: int  # validations planned (before step 1, every steps_per_eval, at the end)
    eval_s: float  # one whole validation
    startup_s: float  # start to the first step: imports, model load, data, compilation, the last save
    source: str  # what was measured, in words
    elapsed_s: float = 0.0  # of a running run: training time so far
    remaining_s: float | None = None  # of a running run: what is left
    peak_memory_bytes: int | None = None  # MLX's peak in the measured steps, when known


def evaluations_planned(total_steps: int, steps_per_eval: int, has_validation: bool = True) -> int:
    """Validations the trainer runs: before step 1, at every multiple of steps_per_eval, and after the last step."""
    if not has_validation:
        return 0
    return 1 + total_steps // steps_per_eval + (1 if total_steps % steps_per_eval else 0)


def validation_batches(cfg: TrainConfig, val_rows: int) -> int:
    batches = math.ceil(val_rows / cfg.batch_size)
    return batches if cfg.val_batches == -1 else min(batches, cfg.val_batches)


def estimate_time_from_probe(cfg: TrainConfig, steps: int = 3, timeout_s: float = PROBE_TIMEOUT_S) -> TimeEstimate:
    """Run the real trainer for `steps` steps (a subprocess, a temporary folder) and scale to the planned run.

    The first step compiles, so it counts once; the others give the steady step time. One validation batch
    is timed before the first step and after the last (the quicker counts) and multiplied by the batches a
    validation of this config runs.
    """
    from .training.loop import total_steps_for

    probe = run_probe(cfg, steps, timeout_s)
    total_steps = total_steps_for(cfg, probe.train_rows)
    evals = evaluations_planned(total_steps, cfg.steps_per_eval, probe.val_rows > 0)
    eval_s = probe.eval_batch_s * validation_batches(cfg, probe.val_rows)
    measured = sum(probe.step_s) + sum(probe.eval_s)
    startup_s = max(0.0, probe.wall_s - measured)
    steady = probe.steady_step_s
    tokens = probe.step_tokens[1:] or probe.step_tokens
    total_s = startup_s + probe.step_s[0] + (total_steps - 1) * steady + evals * eval_s
    return TimeEstimate(
        total_s=total_s,
        steps=total_steps,
        step_s=steady,
        tokens_per_sec=(sum(tokens) / len(tokens)) / steady if steady else None,
        evaluations=evals,
        eval_s=eval_s,
        startup_s=startup_s + max(0.0, probe.step_s[0] - steady),
        source=f"a {steps}-step probe",
        peak_memory_bytes=probe.peak_memory_bytes,
    )


def estimate_time_from_run(run_dir: Path) -> TimeEstimate | None:
    """The estimate a run's own steps so far give (its config, status and metrics); None before its first report."""
    from . import config

    run_dir = Path(run_dir)
    status = runs.read_status(run_dir)
    records = runs.read_metrics(run_dir)
    train = [r for r in records if r.split == "train"]
    if not train or not status.total_steps:
        return None
    cfg = config.load(run_dir / runs.CONFIG_FILE)
    windows = _report_windows(train)
    steady = windows[1:] or windows  # the first window holds the compiling first step
    steps_timed = sum(n for n, _, _ in steady)
    step_s = sum(t for _, t, _ in steady) / max(steps_timed, 1)
    tokens_per_sec = sum(k for _, _, k in steady) / max(sum(t for _, t, _ in steady), 1e-9)
    val_times = [r.val_time_s for r in records if r.split == "val" and r.val_time_s is not None]
    eval_s = sum(val_times[1:] or val_times) / max(len(val_times[1:] or val_times), 1)
    step = train[-1].step
    evals = evaluations_planned(status.total_steps, cfg.steps_per_eval)
    evals_left = max(0, evals - len(val_times))
    remaining = (status.total_steps - step) * step_s + evals_left * eval_s
    if not step_s and status.eta_s is not None:  # no token rates in the metrics: the trainer's own linear ETA
        remaining = status.eta_s
    if status.state in runs.FINISHED_OK:
        remaining = 0.0
    elapsed = max(r.elapsed_s for r in records)
    return TimeEstimate(
        total_s=elapsed + remaining,
        steps=status.total_steps,
        step_s=step_s,
        tokens_per_sec=tokens_per_sec,
        evaluations=evals,
        eval_s=eval_s,
        startup_s=0.0,
        source=f"the run's {step} steps so far",
        elapsed_s=elapsed,
        remaining_s=remaining,
        peak_memory_bytes=round(max((r.peak_memory_gb or 0) for r in train) * GB) or None,
    )


def _report_windows(train: list[runs.TrainRecord]) -> list[tuple[int, float, int]]:
    """(steps, seconds, trained tokens) of each report window, from the records' token counts and rates."""
    windows, step, tokens = [], 0, 0
    for record in train:
        new_tokens = (record.trained_tokens or 0) - tokens
        seconds = new_tokens / record.tokens_per_sec if record.tokens_per_sec else 0.0
        windows.append((record.step - step, seconds, new_tokens))
        step, tokens = record.step, record.trained_tokens or 0
    return windows


# ---- the summary shown in the Training tab ---------------------------------------------------------------


def summary_markdown(memory: MemoryEstimate, time: TimeEstimate | None = None) -> str:
    """A short Markdown block: peak memory and its parts, with and without gradient checkpointing, what the
    machine has, a warning with suggestions when it would not fit, and the time estimate when given."""
    lines = [_memory_headline(memory), "", _parts_line(memory), _checkpointing_line(memory)]
    if not memory.fits:
        lines += ["", *_warning_lines(memory)]
    if time is not None:
        lines += ["", _time_line(time)]
    return "\n".join(line for line in lines if line is not None)


def _memory_headline(memory: MemoryEstimate) -> str:
    head = (
        f"**Memory: about {format_bytes(memory.peak)} at the peak** (MLX), {format_bytes(memory.total)} for the process"
    )
    machine = memory.machine
    if machine.available is None:
        return head + "; this machine's free memory is unknown."
    total = f" of {format_bytes(machine.total)}" if machine.total else ""
    verdict = "fits" if memory.fits else "**does not fit**"
    return f"{head}: {verdict} in {format_bytes(machine.available)} available{total} ({machine.source})."


def _parts_line(memory: MemoryEstimate) -> str:
    parts = " + ".join(f"{name} {format_bytes(size)}" for name, size in memory.parts())
    trainable = f"{memory.trainable_count:,} trainable parameters"
    return f"- {parts} ({trainable})"


def _checkpointing_line(memory: MemoryEstimate) -> str:
    other = estimate_for_shape(
        memory.shape, _with_overrides(memory.cfg, {"grad_checkpoint": not memory.cfg.grad_checkpoint}), memory.machine
    )
    on, off = (memory, other) if memory.cfg.grad_checkpoint else (other, memory)
    return f"- with gradient checkpointing {format_bytes(on.peak)}, without {format_bytes(off.peak)}"


def _warning_lines(memory: MemoryEstimate) -> list[str]:
    lines = ["⚠️ **This run would likely run out of memory.** Changes that would help (estimated peak):"]
    for suggestion in memory.suggestions()[:5]:
        verdict = "fits" if suggestion.estimate.fits else "still too large"
        note = f"; {suggestion.note}" if suggestion.note else ""
        lines.append(f"- `{suggestion.change}`: {format_bytes(suggestion.estimate.peak)}, {verdict}{note}")
    if len(lines) == 1:
        lines.append("- none of the usual changes is enough: use a smaller model or a machine with more memory")
    return lines


def _time_line(time: TimeEstimate) -> str:
    rate = f", {time.tokens_per_sec:,.0f} tokens/s" if time.tokens_per_sec else ""
    evals = f" + {time.evaluations} validations of {format_seconds(time.eval_s)}" if time.evaluations else ""
    line = (
        f"**Time: about {format_seconds(time.total_s)}** for {time.steps:,} steps of {format_seconds(time.step_s)}"
        f"{rate}{evals} + start-up {format_seconds(time.startup_s)} (from {time.source})"
    )
    if time.remaining_s is not None:
        line += f"; {format_seconds(time.remaining_s)} left"
    return line + "."


def format_bytes(size: float) -> str:
    """Decimal units, as the trainer logs peak memory (GB = 10^9 bytes)."""
    if size >= GB:
        return f"{size / GB:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.0f} MB"
    return f"{size / 1e3:.0f} kB"


def format_seconds(seconds: float) -> str:
    """`8.5 s`, `42 s`, `1 min 36 s`, `25 min`, `2 h 05 min`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 10:
        return f"{minutes} min {rest:02d} s"
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
