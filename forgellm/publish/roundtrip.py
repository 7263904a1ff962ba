"""The round-trip check of a fused model: does it answer like the base model with the adapter?

A fused folder is reloaded as a user would load it (`mlx_lm.load`, with the chat template saved in
the folder) and compared with the training-side view (base model + adapter, with the chat template
the run trained with) on a few fixed prompts: the prompt's token ids, the logits of its last position
and the first tokens generated greedily. A lost chat template, a fuse that dropped a layer or a
re-quantization that moves an answer all show up as a first difference, stored in the folder as
`forgellm_roundtrip.json` and shown by the app; a push of a folder that failed needs an override.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..atomic import write_json
from .files import ROUNDTRIP_FILE

# Short, varied, and in the sample corpus's domain, so an adapter trained on it changes the answers.
PROMPTS = (
    "What does a beekeeper check first when opening a hive?",
    "Explain in one sentence why bees make honey.",
    "The queen bee",
)
MAX_TOKENS = 16


@dataclass
class PromptResult:
    prompt: str
    identical: bool
    fused_tokens: list[int]
    reference_tokens: list[int]
    max_logit_diff: float | None  # last prompt position; None when the prompts already differ
    first_difference: str | None = None  # what differs first, in words; None when identical


@dataclass
class RoundTrip:
    identical: bool
    chat_format: bool  # prompts went through the chat template (an IFT run) or were plain text (CPT)
    max_tokens: int
    prompts: list[PromptResult] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the app and the model card."""
        n = len(self.prompts)
        if self.identical:
            worst = max((p.max_logit_diff or 0.0 for p in self.prompts), default=0.0)
            return (
                f"identical: {n} of {n} prompts give the same {self.max_tokens} greedy tokens "
                f"(max logit difference {worst:.2g})"
            )
        differing = [p for p in self.prompts if not p.identical]
        return f"differs on {len(differing)} of {n} prompts; first: {differing[0].first_difference}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_roundtrip(model_dir: Path) -> RoundTrip | None:
    """The stored result of a fused folder's check, or None when it was never checked (or is unreadable)."""
    try:
        data = json.loads((Path(model_dir) / ROUNDTRIP_FILE).read_text(encoding="utf-8"))
        prompts = [PromptResult(**p) for p in data.pop("prompts", [])]
        return RoundTrip(**data, prompts=prompts)
    except (OSError, ValueError, TypeError):
        return None


def check_roundtrip(fused_dir: Path, checkpoint: Path, prompts: tuple[str, ...] = PROMPTS) -> RoundTrip:
    """Compare the fused folder with base + the checkpoint's adapter; write and return the result."""
    from mlx_lm.utils import load

    from ..inference import load_for_chat

    fused_model, fused_tokenizer = load(str(fused_dir))
    reference = load_for_chat(str(runs.base_model_of(checkpoint)), checkpoint)
    chat_format = _trained_on_chat(checkpoint)
    results = []
    for prompt in prompts:
        fused_text = _format(fused_tokenizer, None, prompt, chat_format)
        reference_text = _format(reference.tokenizer, reference.chat_template, prompt, chat_format)
        results.append(
            _compare(
                prompt,
                (fused_model, fused_tokenizer, fused_text),
                (reference.model, reference.tokenizer, reference_text),
            )
        )
    result = RoundTrip(all(r.identical for r in results), chat_format, MAX_TOKENS, results)
    write_json(Path(fused_dir) / ROUNDTRIP_FILE, result.to_dict())
    return result


def _trained_on_chat(checkpoint: Path) -> bool:
    """IFT runs are checked through the chat template; CPT runs on plain text, as each was trained."""
    from .card import gather  # the card reads the run the same way (card.py imports this module)

    return gather(checkpoint).train_type == "ift"


def _format(tokenizer: Any, template: str | None, prompt: str, chat_format: bool) -> str:
    if not chat_format:
        return prompt
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if template:
        kwargs["chat_template"] = template
    elif not getattr(tokenizer, "chat_template", None):
        return f"(no chat template) {prompt}"  # compared as text: the other side's template makes it differ
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], **kwargs)


def _compare(prompt: str, fused: tuple[Any, Any, str], reference: tuple[Any, Any, str]) -> PromptResult:
    import mlx.core as mx

    (f_model, f_tok, f_text), (r_model, r_tok, r_text) = fused, reference
    f_ids, r_ids = _encode(f_tok, f_text), _encode(r_tok, r_text)
    if f_ids != r_ids:
        at = _first_mismatch(f_ids, r_ids)
        why = f"the prompt is tokenized differently from token {at} (chat template or tokenizer changed)"
        return PromptResult(prompt, False, f_ids, r_ids, None, why)
    prompt_ids = mx.array([f_ids])
    logit_diff = mx.abs(f_model(prompt_ids)[0, -1] - r_model(prompt_ids)[0, -1]).max().item()
    f_out, r_out = _greedy(f_model, f_ids), _greedy(r_model, r_ids)
    if f_out == r_out:
        return PromptResult(prompt, True, f_out, r_out, logit_diff)
    at = _first_mismatch(f_out, r_out)
    why = (
        f"generated token {at + 1} of {len(f_out)}: fused {f_tok.decode([f_out[at]])!r} "
        f"vs base + adapter {r_tok.decode([r_out[at]])!r} (prompt {prompt!r})"
    )
    return PromptResult(prompt, False, f_out, r_out, logit_diff, why)


def _first_mismatch(a: list[int], b: list[int]) -> int:
    """Index of the first position where the lists differ (the shorter one's length if one is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _encode(tokenizer: Any, text: str) -> list[int]:
    # A chat-formatted prompt already holds its special tokens; a plain one gets the tokenizer's BOS, if any.
    return list(tokenizer.encode(text, add_special_tokens=not _has_bos(tokenizer, text)))


def _has_bos(tokenizer: Any, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def _greedy(model: Any, prompt_ids: list[int]) -> list[int]:
    """MAX_TOKENS greedy tokens (not stopped at EOS, so both sides are compared over the same length)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    steps = generate_step(mx.array(prompt_ids), model, max_tokens=MAX_TOKENS, sampler=lambda x: mx.argmax(x, axis=-1))
    return [int(token) for token, _ in steps]
