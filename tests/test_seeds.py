"""Independent seeds: every stream of a run comes from its seed through
numpy's SeedSequence, runs with different seeds share no env seed, and every evaluation
plays fresh start states."""

from __future__ import annotations

import numpy as np
import torch
from helpers import tiny

import dqn_cli.run.build as build
import dqn_cli.run.phases as phases
import dqn_cli.run.trainer as trainer
from dqn_cli.run.evaluate import eval_num_envs, eval_seeds, make_eval_env
from dqn_cli.runtime import STREAMS, fold_seed, int_seed, seeds


def run_env_seeds(seed: int, num_envs: int = 8, evaluations: int = 10, episodes: int = 10) -> list[int]:
    """Every env seed a run with ``seed`` hands out: training envs (and their action space),
    each evaluation's envs and epsilon draws, envs restarted on resume at a few steps."""
    out = list(seeds(seed, "train_envs", num_envs + 1))
    for k in range(evaluations):
        env_seeds, policy_seed = eval_seeds(seed, episodes, k)
        out += [*env_seeds, policy_seed]
    for step in (10_000, 50_000, 250_000):
        out += seeds(seed, "resume_envs", num_envs, step)
    return out


def test_runs_with_seeds_0_to_999_share_no_env_seed():
    """seed + i per env made runs s and s+1 share E-1 training env seeds and 7 of 8 eval starts."""
    owner: dict[int, int] = {}
    for seed in range(1000):
        mine = run_env_seeds(seed)
        assert len(set(mine)) == len(mine), f"seed {seed} hands out one env seed twice"
        for value in mine:
            assert owner.setdefault(value, seed) == seed, f"seeds {owner[value]} and {seed} share env seed {value}"
    assert len(owner) == 1000 * len(run_env_seeds(0))


def test_streams_are_distinct_and_reproducible():
    assert seeds(3, "train_envs", 4) == seeds(3, "train_envs", 4)  # the same run, the same numbers
    firsts = {name: int_seed(3, name) for name in STREAMS}
    assert len(set(firsts.values())) == len(STREAMS)
    assert all(0 <= v < 2**63 for v in firsts.values())
    assert 0 <= fold_seed(2**63 - 1, 32) < 2**32 and fold_seed(5, 32) != fold_seed(6, 32)


def test_exploration_does_not_replay_the_initialisation_stream(monkeypatch, tmp_path):
    """The agent's epsilon generator used to be seeded like torch's global generator, so its
    draws repeated the ones that initialised the weights."""
    seen = {}

    class Recording(build.DQNAgent):
        def __init__(self, *args, seed, **kwargs):
            seen["seed"] = seed
            super().__init__(*args, seed=seed, **kwargs)

    monkeypatch.setattr(build, "DQNAgent", Recording)
    cfg = tiny("total_steps=80")
    trainer.train(cfg, tmp_path)
    assert seen["seed"] == int_seed(cfg.seed, "exploration")
    assert torch.initial_seed() == int_seed(cfg.seed, "init") != seen["seed"]


def test_each_evaluation_of_a_run_plays_fresh_start_states(monkeypatch, tmp_path):
    """The same starts at every evaluation bias best_eval_mean_return upwards."""
    calls = []
    real = phases.evaluate

    def recording(net, envs, spec, episodes, env_seeds, policy_seed, *args, **kwargs):
        calls.append((tuple(env_seeds), policy_seed))
        return real(net, envs, spec, episodes, env_seeds, policy_seed, *args, **kwargs)

    monkeypatch.setattr(phases, "evaluate", recording)
    cfg = tiny()
    cfg.eval.every = 50
    trainer.train(cfg, tmp_path)
    assert len(calls) == 4  # at 50, 100, 150 and the final one at 200
    all_seeds = [s for env_seeds, policy in calls for s in (*env_seeds, policy)]
    assert len(set(all_seeds)) == len(all_seeds)
    # and the seeds really are different start states: CartPole's first observations differ
    envs = make_eval_env(cfg.env, 3, 0)
    try:
        starts = [envs.reset(seed=list(env_seeds))[0] for env_seeds, _ in calls]
    finally:
        envs.close()
    for a in range(len(starts)):
        for b in range(a + 1, len(starts)):
            assert not np.isclose(starts[a][:, None], starts[b][None]).all(axis=-1).any()
    assert len(calls[0][0]) == eval_num_envs(3)
