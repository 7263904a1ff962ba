"""Publishing: fuse a run's checkpoint into a full model folder (and, later, push it to the Hub)."""
