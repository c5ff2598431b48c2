"""Training: the losses of design §4 (losses) and the resumable, distributed training loop (loop)."""
