"""dqn: config-driven Deep Q-Network training from the command line.

``dqn_cli.load(PATH)`` loads a trained agent (:mod:`dqn_cli.api`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":  # imported on first use: `dqn --help` does not import torch
        from dqn_cli.api import load

        return load
    raise AttributeError(f"module 'dqn_cli' has no attribute {name!r}")
