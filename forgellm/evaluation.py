"""Loss and perplexity of a model on prepared data (a run's validation split) or on text, token-weighted.

One definition shared by everything that reports a model's quality outside training: `forgellm eval`,
gain and forgetting per run (`forgellm.gain`), the perplexity cost of a quantized export. The
trainer's own validation uses the same cross-entropy (`training.loop.summed_loss`), so a run's
validation split measured here gives the run's logged validation loss.

Text (a file or a folder) goes through the CPT data pipeline's own stages: the same readers, the
same cleaning and exact-duplicate removal, each document tokenized and followed by EOS, concatenated
and cut into windows of max_seq_length + 1 tokens at stride max_seq_length, as in training. Training
drops the final remainder (shorter than a window); evaluation scores it too, as one last row padded
and masked, so every token after the first is a target exactly once.

The standard error is that of the mean token loss, computed over documents: token losses within a
document are correlated, so each document is one sample (a cluster), and the error of the
token-weighted mean is sqrt(k / (k - 1) * sum_d (S_d - mean * N_d)^2) / N for k documents with summed
loss S_d over N_d tokens (the ratio-estimator formula). With fewer than two documents it is taken over
tokens (sample standard deviation / sqrt(N)), which understates it; IFT splits use rows (packed whole
examples) as the samples. `Measure.stderr_unit` says which.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import paths, runs
from .data.records import FileEntry, Problems, Split
from .errors import ForgeError, custom_code_refusal

DEFAULT_MAX_SEQ_LENGTH = 512  # windows for text evaluated without a run to take the length from
ENCODE_BATCH_CHARS = 1 << 20  # text per tokenizer call


@dataclass
class SplitLoss:
    loss: float  # mean cross-entropy per trained token
    tokens: int  # trained tokens it was averaged over

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))


def split_loss(model: Any, split: Split, batch_size: int = 4) -> SplitLoss:
    """Mean cross-entropy over every trained position of `split` (prompt and padding excluded)."""
    import mlx.core as mx

    from .training.loop import summed_loss

    total, count = mx.array(0.0), mx.array(0.0)
    for start in range(0, len(split), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split)))
        tokens = split.tokens[rows]
        if split.mask is None:
            weights = np.ones((len(rows), tokens.shape[1] - 1), dtype=np.float32)
        else:
            weights = split.mask[rows, 1:].astype(np.float32)
        ce_sum, ntoks = summed_loss(model, mx.array(tokens), mx.array(weights))
        total, count = total + ce_sum, count + ntoks
        mx.eval(total, count)
    n = int(count.item())
    return SplitLoss(total.item() / max(n, 1), n)


def run_validation_split(run_dir: Path, tokenizer: Any) -> Split:
    """The validation split a run was evaluated on, rebuilt from its config (read from the data cache)."""
    from .data import prepare
    from .training.session import load_run_config

    return prepare(load_run_config(Path(run_dir)), tokenizer).val


def run_of_checkpoint(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder belongs to (runs/<id>/checkpoints/<step>)."""
    run_dir = Path(checkpoint).resolve().parent.parent
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise ForgeError("this checkpoint is not inside a run folder", str(checkpoint), "pass a run's checkpoint")
    return run_dir


# ---- per-token losses and their standard error -------------------------------------------------------


@dataclass
class Measure:
    """Mean token loss on some data, with its perplexity and standard error."""

    loss: float  # mean cross-entropy per scored token (nats)
    tokens: int  # scored tokens
    stderr: float | None  # standard error of `loss`; None with fewer than two samples
    stderr_unit: str  # what the samples of the standard error are: documents, rows or tokens
    units: int  # how many of them

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "perplexity": self.perplexity}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measure:
        return cls(data["loss"], data["tokens"], data["stderr"], data["stderr_unit"], data["units"])


def token_losses(model: Any, split: Split, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy at every target position of `split` and its weight (1 scored; 0 prompt or padding).

    The per-position terms of `training.loop.summed_loss` (float32 logits, the same loss function).

    Returns:
        (losses, weights), float arrays of shape (rows, max_seq_length), row by row.
    """
    import mlx.core as mx
    import mlx.nn as nn

    losses, weights = [], []
    for start in range(0, len(split), batch_size):
        rows = np.arange(start, min(start + batch_size, len(split)))
        tokens = mx.array(split.tokens[rows])
        if split.mask is None:
            w = np.ones((len(rows), split.tokens.shape[1] - 1), dtype=np.float32)
        else:
            w = split.mask[rows, 1:].astype(np.float32)
        logits = model(tokens[:, :-1])
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), tokens[:, 1:]) * mx.array(w)
        losses.append(np.array(ce, dtype=np.float32))
        weights.append(w)
    width = split.tokens.shape[1] - 1
    if not losses:
        return np.zeros((0, width), np.float32), np.zeros((0, width), np.float32)
    return np.concatenate(losses), np.concatenate(weights)


def measure(losses: np.ndarray, weights: np.ndarray, samples: np.ndarray, unit: str) -> Measure:
    """Token-weighted mean of `losses` where `weights` is 1, with its standard error over `samples`.

    Args:
        losses, weights: As `token_losses` returns them.
        samples: For each position, the sample (document or row) it belongs to; same shape.
        unit: The samples' name, for the report ("documents" or "rows").
    """
    keep = weights.reshape(-1) > 0
    values = losses.reshape(-1)[keep].astype(np.float64)
    groups = samples.reshape(-1)[keep]
    n = len(values)
    if n == 0:
        raise ForgeError("nothing to score: the data has no target token", "evaluation", "give more text")
    mean = float(values.sum() / n)
    _, groups = np.unique(groups, return_inverse=True)
    k = int(groups.max()) + 1
    if k >= 2:
        sums, counts = np.bincount(groups, weights=values), np.bincount(groups)
        stderr = math.sqrt(k / (k - 1) * float(((sums - mean * counts) ** 2).sum())) / n
        return Measure(mean, n, stderr, unit, k)
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return Measure(mean, n, stderr, "tokens", n)


def document_ids(split: Split, eos_id: int) -> np.ndarray:
    """For each target position of CPT windows, the document it belongs to (a document's last target is
    its EOS; windows overlap by one token, so their targets row by row are the token stream)."""
    targets = split.tokens[:, 1:]
    ends = (targets.reshape(-1) == eos_id).astype(np.int64)
    return (np.cumsum(ends) - ends).reshape(targets.shape)  # EOS counted before each position


def row_ids(split: Split) -> np.ndarray:
    rows, width = split.tokens.shape[0], split.tokens.shape[1] - 1
    return np.repeat(np.arange(rows), width).reshape(rows, width)


def measure_split(model: Any, split: Split, eos_id: int, by: str = "documents", batch_size: int = 4) -> Measure:
    """Loss, perplexity and standard error of `model` on `split`, the samples being documents (CPT windows,
    told apart by EOS) or rows (IFT: whole examples packed into rows)."""
    losses, weights = token_losses(model, split, batch_size)
    samples = document_ids(split, eos_id) if by == "documents" else row_ids(split)
    return measure(losses, weights, samples, by)


# ---- text through the CPT pipeline ---------------------------------------------------------------------


@dataclass
class Documents:
    """Documents read as CPT training reads them (cleaned, empty and exact duplicates dropped)."""

    texts: list[str]
    digests: np.ndarray  # uint64: the first 8 bytes of each document's content hash, as the pipeline keeps
    files: list[FileEntry]
    problems: Problems


def read_documents(paths_or_files: Iterable[Path], text_field: str = "text", key: str = "data") -> Documents:
    """Every document of these files and folders, read exactly as CPT training reads them.

    The same discovery, readers and duplicate rule as `data.cpt.tokenize_corpus` (so the same
    documents, in the same order, with the same content digests feed the split rule of `data.split`).
    Files inside the data cache are never read, as in training.

    Raises:
        ForgeError: when a path does not exist.
    """
    from .data.ingest import discover, sniff
    from .data.ingest import read_documents as read_file

    cache = (paths.cache_dir() / "data").resolve()
    found = [p for p in discover(list(paths_or_files), key) if not p.resolve().is_relative_to(cache)]
    files = [sniff(p, "cpt") for p in found]
    texts, digests, seen, problems = [], [], set(), Problems()
    for entry in files:
        if entry.status != "read":
            continue
        entry.documents = 0
        for doc in read_file(entry, text_field, problems):
            digest = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if not doc.text or digest in seen:
                continue
            seen.add(digest)
            entry.documents += 1
            texts.append(doc.text)
            digests.append(digest[:8])
    return Documents(texts, np.frombuffer(b"".join(digests), dtype=np.uint64).copy(), files, problems)


def encode_texts(texts: list[str], tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Token stream of `texts` as CPT training makes it (each document followed by EOS), and the lengths."""
    from .data.tokens import tokenizer_info

    info = tokenizer_info(tokenizer)
    flats, lengths, batch, chars = [], [], [], 0
    for text in [*texts, None]:
        if text is not None:
            batch.append(text)
            chars += len(text)
        if batch and (text is None or chars >= ENCODE_BATCH_CHARS):
            flat, lens = info.encode_documents(batch)
            flats.append(flat)
            lengths.append(lens)
            batch, chars = [], 0
    if not flats:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(flats), np.concatenate(lengths)


def windows(stream: np.ndarray, seq_len: int, pad_id: int) -> Split:
    """Training's windows (seq_len + 1 tokens at stride seq_len) plus the remainder as a last padded row.

    Every token of `stream` after the first is a scored target exactly once.
    """
    n = len(stream)
    if n < 2:
        return Split(np.zeros((0, seq_len + 1), np.int32), np.zeros((0, seq_len + 1), np.uint8))
    full = (n - 1) // seq_len
    rest = n - 1 - full * seq_len
    rows = full + (1 if rest else 0)
    tokens = np.full((rows, seq_len + 1), pad_id, dtype=np.int32)
    mask = np.zeros((rows, seq_len + 1), dtype=np.uint8)
    if full:
        tokens[:full] = np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[::seq_len][:full]
        mask[:full, 1:] = 1
    if rest:
        tokens[full, : rest + 1] = stream[full * seq_len :]
        mask[full, 1 : rest + 1] = 1
    lengths = np.full(rows, seq_len + 1, dtype=np.int32)
    if rest:
        lengths[-1] = rest + 1
    return Split(tokens, mask, lengths)


def text_split(texts: list[str], tokenizer: Any, seq_len: int) -> Split:
    """Windows of `texts` for evaluation (see `windows`)."""
    from .data.tokens import tokenizer_info

    stream, _ = encode_texts(texts, tokenizer)
    return windows(stream, seq_len, tokenizer_info(tokenizer).pad_id)


def no_usable_text(docs: Documents, where: str) -> ForgeError:
    skipped = [f for f in docs.files if f.status != "read"]
    reasons = sorted({f.reason or "unreadable" for f in skipped})
    detail = f"{len(docs.files)} file(s) found, {len(skipped)} skipped"
    if reasons:
        detail += f" ({'; '.join(reasons[:3])})"
    return ForgeError(
        f"no usable text to evaluate on: {detail}",
        where,
        "point --data at .txt/.md/.jsonl/... files with text, a run folder, or `val` with --adapter RUN",
    )


# ---- models ---------------------------------------------------------------------------------------------


def load_model(model: str, adapter_dir: Path | None = None) -> tuple[Any, Any]:
    """Load `model` (a built-in name, folder or Hub id) with an optional adapter checkpoint, for scoring.

    Not the chat cache (`inference.load_for_chat`): measuring a run's checkpoints one after another must
    not evict the models a chat is using. The adapter folder is resolved the same way (`runs.adapter_dir`).

    Raises:
        ForgeError: when the adapter was trained on another base model or does not fit it.
    """
    from mlx_lm.utils import load

    from .models.registry import resolve_model

    model_path = resolve_model(model)
    if adapter_dir is not None:
        check_adapter_base(model, model_path, adapter_dir)
    try:
        net, tokenizer = load(str(model_path), adapter_path=str(adapter_dir) if adapter_dir else None)
    except ValueError as e:  # mlx-lm's message for weights that do not match the model's shapes
        refusal = custom_code_refusal(e, model_path, trusted_here=False)
        if refusal:
            raise refusal from e
        raise ForgeError(
            f"the adapter does not fit this base model: {e}",
            str(adapter_dir),
            "pick the base model the run was trained on (see its config.yaml)",
        ) from e
    net.eval()
    return net, tokenizer


def check_adapter_base(model: str, model_path: Path, adapter_dir: Path) -> None:
    """Refuse an adapter trained on another base model (a same-shaped copy of that base is accepted).

    Raises:
        ForgeError: naming the base the adapter was trained on.
    """
    name = runs.adapter_base_mismatch(Path(model_path), adapter_dir)
    if name is not None:
        raise ForgeError(
            f"this adapter was trained on base model {name}, not on {model}",
            str(adapter_dir),
            f"pass --model {name} (the run's base model, in its config.yaml), or an adapter trained on {model}",
        )


# ---- forgellm eval --------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """What `forgellm eval` reports for one model on one data set."""

    model: str  # as given: a built-in name, a folder or a Hub id
    adapter: str | None  # the checkpoint folder used, or None for the base model alone
    data: str  # what was measured
    source: str  # "text" or "run-validation"
    max_seq_length: int
    documents: int | None  # documents read (text), or the run's validation documents (IFT: examples)
    windows: int  # rows scored
    measure: Measure

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "measure"}
        return {**out, **self.measure.as_dict()}

    def summary(self) -> str:
        m = self.measure
        model = self.model + (f" + {self.adapter}" if self.adapter else "")
        unit = "examples" if self.measure.stderr_unit == "rows" else "documents"
        docs = f"{self.documents:,} {unit}, " if self.documents is not None else ""
        error = f"standard error {m.stderr:.4f} over {m.units:,} {m.stderr_unit}" if m.stderr is not None else "n/a"
        return "\n".join(
            [
                f"model       {model}",
                f"data        {self.data} ({docs}{self.windows:,} windows of {self.max_seq_length})",
                f"perplexity  {m.perplexity:.4f}",
                f"mean loss   {m.loss:.5f} ({error})",
                f"tokens      {m.tokens:,}",
            ]
        )


def eval_target(data: str | Path, adapter: str | Path | None, checkpoint: str = "best") -> Path | None:
    """The run whose validation split `data` names, or None when `data` is text.

    `data` is `val` (the validation split of the run given as `adapter`, a run or checkpoint folder), a
    run folder (its validation split), or a text file or folder.

    Raises:
        ForgeError: for `val` without an adapter, or a path that does not exist.
    """
    if str(data) == "val":
        if not adapter:
            raise ForgeError(
                "--data val means the validation split of the run given with --adapter, and no adapter was given",
                "--data val",
                "add --adapter runs/<run-id>, or pass the run folder itself: --data runs/<run-id>",
            )
        folder = Path(adapter)
        return folder.resolve() if runs.is_run_dir(folder) else run_of_checkpoint(runs.adapter_dir(folder, checkpoint))
    path = Path(data)
    if not path.exists():
        raise ForgeError("data path does not exist", f"--data {data}", "give a text file, a folder, a run or `val`")
    return path.resolve() if path.is_dir() and runs.is_run_dir(path) else None


def evaluate(
    model: str,
    data: str | Path,
    adapter: str | Path | None = None,
    checkpoint: str = "best",
    max_seq_length: int | None = None,
    batch_size: int = 4,
) -> EvalResult:
    """Perplexity, mean loss, scored tokens and standard error of `model` (with an optional adapter) on `data`.

    Args:
        model: A built-in model name, a model folder or a Hub id.
        data: A text file or folder (the CPT pipeline's windows), a run folder (its validation split,
            exactly as the trainer evaluated it) or `val` (the validation split of `adapter`'s run).
        adapter: A run folder or a checkpoint folder, or None for the base model.
        checkpoint: best, latest or a step, when `adapter` is a run folder.
        max_seq_length: Window length for text; default the adapter's run's, else 512.
        batch_size: Windows per forward pass (memory, not results).

    Raises:
        ForgeError: for data with no usable text, a missing checkpoint, an adapter from another base
            model, a path that does not exist.
    """
    from .data.tokens import tokenizer_info

    run_dir = eval_target(data, adapter, checkpoint)
    adapter_dir = runs.adapter_dir(Path(adapter), checkpoint) if adapter else None
    # Everything that can be refused is checked before the model is loaded.
    docs = _text_documents(data) if run_dir is None else _check_run_length(run_dir, max_seq_length, data)
    net, tokenizer = load_model(model, adapter_dir)
    if run_dir is not None:
        target = _run_target(run_dir, tokenizer)
    else:
        seq_len = max_seq_length or _run_seq_len(adapter_dir) or DEFAULT_MAX_SEQ_LENGTH
        split = text_split(docs.texts, tokenizer, seq_len)
        target = _Target(split, seq_len, "documents", len(docs.texts), str(data), "text")
    m = measure_split(net, target.split, tokenizer_info(tokenizer).eos_id, target.by, batch_size)
    adapter_name = str(adapter_dir) if adapter_dir else None
    return EvalResult(
        model, adapter_name, target.data, target.source, target.seq_len, target.count, len(target.split), m
    )


@dataclass
class _Target:
    split: Split
    seq_len: int
    by: str  # what the standard error's samples are: documents or rows
    count: int | None  # documents or examples
    data: str
    source: str


def _text_documents(data: str | Path) -> Documents:
    docs = read_documents([Path(data)])
    if not docs.texts:
        raise no_usable_text(docs, f"--data {data}")
    return docs


def _check_run_length(run_dir: Path, max_seq_length: int | None, data: str | Path) -> None:
    from .training.session import load_run_config

    length = load_run_config(run_dir).max_seq_length
    if max_seq_length and max_seq_length != length:
        raise ForgeError(
            f"a run's validation split has the run's windows of {length} tokens, not {max_seq_length}",
            f"--data {data}",
            "drop --max-seq-length (it applies to text files and folders)",
        )


def _run_target(run_dir: Path, tokenizer: Any) -> _Target:
    """A run's validation split, rebuilt exactly as the trainer evaluated it (from the data cache)."""
    from .data import prepare
    from .training.session import load_run_config

    cfg = load_run_config(run_dir)
    prepared = prepare(cfg, tokenizer)
    count = (prepared.report.get("documents") or prepared.report.get("examples") or {}).get("val")
    by = "documents" if cfg.train_type == "cpt" else "rows"
    return _Target(prepared.val, cfg.max_seq_length, by, count, f"validation split of {run_dir}", "run-validation")


def _run_seq_len(adapter_dir: Path | None) -> int | None:
    """max_seq_length of the run an adapter checkpoint belongs to (None when it is not inside a run)."""
    if adapter_dir is None:
        return None
    from .training.session import load_run_config

    try:
        return load_run_config(run_of_checkpoint(adapter_dir)).max_seq_length
    except ForgeError:
        return None
