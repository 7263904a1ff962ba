"""ForgeLLM: continued pre-training and instruction fine-tuning of LLMs with MLX, from a browser or the CLI.

Importing the package loads an optimized BLAS for MLX's Linux CPU build before anything imports
`mlx.core` (see `forgellm.platform`); this is the only import-time side effect.
"""

import os

from .platform import ensure_fast_blas

# transformers (used only for tokenizers) warns at import that PyTorch is absent: irrelevant here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"

ensure_fast_blas()
