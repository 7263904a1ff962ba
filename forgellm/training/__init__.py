"""What runs inside the trainer subprocess: `train_run` drives one run folder from start to end."""

from .session import train_run

__all__ = ["train_run"]
