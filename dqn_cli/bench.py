"""`dqn bench`: placeholder replaced below."""
