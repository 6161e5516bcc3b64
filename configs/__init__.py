"""Hydra configs of dqn, shipped inside the wheel as dqn_cli.configs."""
