"""Environments: the spec, vector envs, Atari, MinAtar, frame stacking, worker processes."""
