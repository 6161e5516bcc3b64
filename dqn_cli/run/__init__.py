"""One training or evaluation run: the loop, checkpoints, resume, evaluation, metrics, video."""
