"""ForgeLLM's data pipeline: your documents → fixed-length training rows, with a report you can trust.

    from forgellm.data import prepare
    prepared = prepare(cfg, tokenizer)          # cached: unchanged inputs are not re-tokenized
    prepared.train.tokens                       # int32 (rows, max_seq_length + 1); inputs row[:-1], targets row[1:]
    prepared.train.mask                         # uint8 same shape, or None (= every target trained)
    prepared.report                             # JSON-serialisable; format_report(report) prints it

Stages. CPT: ingest (ingest.py) → tokenize to disk, drop exact duplicates (cpt.py) → split by document
→ mix a general corpus → windows (pack.py). IFT: records and formats (formats.py) → chat template and
assistant spans (chat.py) → filter, mask, split by example, pack whole examples (ift.py).

Report keys (schema_version 1):
    train_type, data, max_seq_length, seed
    tokenizer        {name, fingerprint, eos_id, pad_id, vocab_size}
    files            [{path, kind, size, status: read|skipped, reason, encoding, documents}]
    general_files    same, for mixture.general (CPT)
    files_summary    {found, read, skipped, skipped_by_reason: {reason: n}}
    general_files_summary  same for mixture.general, or null
    problems         [{file, line, what, fix}] (capped at 20 per file), problems_total
    notes            [str]: not errors, but worth knowing (repeated general corpus, guessed encodings...)
    documents        CPT {read, kept, empty, duplicates, train, val}; null for IFT
    examples         IFT {read, kept, train, val, truncated, dropped: {malformed, empty, duplicate,
                     overlong, template_error, no_trainable_tokens}}; null for CPT
    tokens           CPT {corpus, train, val}; IFT {examples, train, val}
    splits           {train, val}: {rows, tokens_in_rows, targets, padding_fraction, ...} (CPT adds
                     documents, tokens, remainder, domain_tokens_in_rows, general_tokens_in_rows;
                     IFT adds examples, padding)
    yield            CPT {corpus_tokens, train_tokens, val_tokens, unused_tokens, fraction}: domain
                     tokens that reach a row; only each split's final remainder is unused
    mixture          CPT with mixture.general: {general, ratio_requested, ratio_achieved,
                     general_tokens_available, general_tokens_used, general_repeats, general_documents}
    ift              IFT {formats: {file: format}, chat_template_source: tokenizer|default,
                     chat_template, mask_prompt, overlong, template_fallbacks}
    lengths          {unit, count, min, max, mean, median, p90, scale: linear|log2, edges, counts}
    cache            {key, hit, path}
    error            only in the report a DataError carries (no usable data): its message
    seconds, mb_per_s

Choices. Each file is one document for text/HTML/PDF/DOCX; each record for JSON/JSONL/CSV. The
validation split takes ceil(val_fraction × documents), chosen by a seeded hash of content. A general
corpus smaller than the mixture needs is repeated (with a note in the report), never an error.
Validation is domain-only. The pipeline needs a fast (Rust) tokenizer with an EOS token.
"""

from __future__ import annotations

from .chat import DEFAULT_CHAT_TEMPLATE
from .ingest import scan_files
from .pipeline import data_command, load_tokenizer, prepare, render_example
from .records import FileEntry, PreparedData, Split
from .report import format_report

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "FileEntry",
    "PreparedData",
    "Split",
    "data_command",
    "format_report",
    "load_tokenizer",
    "prepare",
    "render_example",
    "scan_files",
]
