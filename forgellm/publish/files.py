"""Names of the files ForgeLLM writes into a model folder it makes for publishing.

Kept apart from the modules that write them (fuse, roundtrip, quantize, adapter), so that modules
which only look for a file (the card, the push, the app's folder lists) import no MLX and no cycle.
"""

FUSE_RECORD = "forgellm_fuse.json"  # which run and checkpoint a fused folder came from (local paths: never pushed)
ROUNDTRIP_FILE = "forgellm_roundtrip.json"  # the round-trip check of a fused folder
QUANTIZE_FILE = "forgellm_quantize.json"  # a quantized copy: its source and perplexity cost
ADAPTER_RECORD = "forgellm_adapter.json"  # an adapter export: run name, step, weights hash (no paths)
