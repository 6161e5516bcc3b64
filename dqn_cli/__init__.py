"""dqn: config-driven Deep Q-Network training from the command line."""

__version__ = "0.1.0"
