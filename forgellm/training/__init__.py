"""What runs inside the trainer subprocess: `run_training` drives one run folder from start to end."""

from .session import run_training, start_run_dir

__all__ = ["run_training", "start_run_dir"]
