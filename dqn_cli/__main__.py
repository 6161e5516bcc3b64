"""`python -m dqn_cli ...` is the same as `dqn ...`."""

from dqn_cli.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
