"""Experience replay: storage (rings of frames, Batch) and samplers (uniform, prioritized)."""
