"""The engine: runtime, optimisers, checkpoints, logging, torch.distributed and the run skeleton (run.py)."""
