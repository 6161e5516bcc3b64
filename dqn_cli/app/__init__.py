"""The command line: Hydra entrypoint, sweep summaries, plots."""
