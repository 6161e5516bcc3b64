"""Typed configuration: one dataclass per config group, registered in Hydra's
ConfigStore as the schema the YAML files in ``configs/`` are merged into.

Hydra composes ``configs/train.yaml`` (a defaults list over the groups) on top
of :class:`TrainConfig`, so an unknown key or a wrongly typed value is refused
by OmegaConf while composing.  :func:`to_train_config` then turns the
DictConfig into plain dataclasses and :func:`validate` checks the values;
nothing below ``cli.py`` ever sees a DictConfig.

Units: every step count is in *environment steps summed over all vector
envs* unless its comment says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf

from dqn_cli.errors import ConfigError


@dataclass
class EnvConfig:
    name: str = "cartpole"  # preset name, used in run directory names
    kind: str = "classic"  # classic (flat Box obs, Discrete actions) | atari | minatar
    id: str = "CartPole-v1"  # Gymnasium id (kind=classic)
    game: str = "Breakout"  # ALE or MinAtar game name, any spelling (kind=atari, minatar)
    num_envs: int = 4  # environments stepped together
    vectorization: str = "sync"  # sync (one process) | async (subprocesses) | ale (Atari) | envpool (Atari, classic)
    worker_restarts: int = 3  # async: training env workers that die are restarted (fresh episodes) this often; 0 = stop
    max_episode_steps: Optional[int] = None  # time limit in agent steps; None keeps the env's own
    imports: List[str] = field(default_factory=list)  # modules imported first: packages registering their env ids
    frame_stack: int = 1  # observations stacked into the agent's input
    # Atari preprocessing (Machado et al. 2018; Mnih et al. 2015). Ignored for classic envs.
    frame_skip: int = 4  # emulator frames per agent step, max-pooled over the last two
    sticky_action_prob: float = 0.0  # repeat_action_probability: 0 = DQN paper, 0.25 = Machado et al.
    noop_max: int = 30  # up to this many no-op actions after reset
    episodic_life: bool = True  # training treats a lost life as terminal (never in evaluation)
    fire_reset: bool = True  # press FIRE after reset in games that need it
    clip_rewards: bool = True  # training rewards clipped to their sign (never in evaluation)
    screen_size: int = 84  # square grayscale frame side, pixels
    max_episode_frames: int = 108_000  # emulator frames before truncation (30 min at 60 Hz)
    full_action_space: bool = False  # all 18 ALE actions (all 6 MinAtar ones) instead of the game's minimal set
    # a benchmark whose games alone are accepted: null (any game) | atari100k (its 26 games, ATARI_100K_GAMES)
    suite: Optional[str] = None

    @property
    def label(self) -> str:
        """The env as users name it: CartPole-v1, Breakout (ALE), MinAtar/Breakout."""
        if self.kind == "classic":
            return self.id
        return f"MinAtar/{self.game}" if self.kind == "minatar" else str(self.game)


@dataclass
class NetworkConfig:
    name: str = "mlp"  # mlp | nature_cnn | minatar_cnn
    hidden_sizes: List[int] = field(default_factory=lambda: [256, 256])  # mlp layer widths
    activation: str = "relu"  # relu | tanh | elu | gelu | silu
    dueling: bool = False  # dueling head, Wang et al. 2016
    dueling_aggregator: str = "mean"  # mean (paper's choice) | max
    cnn_hidden: int = 512  # nature_cnn / minatar_cnn fully connected width
    # distributional RL: none (expected Q-values) | c51 (Bellemare et al. 2017: a categorical
    # distribution of returns over `atoms` evenly spaced values in [v_min, v_max], cross-entropy loss)
    # | qr (Dabney et al. 2018, QR-DQN: `quantiles` quantiles of the return, quantile Huber loss)
    distributional: str = "none"
    atoms: int = 51
    quantiles: int = 200  # qr: the loss is pairwise, batch x quantiles**2
    noisy: bool = False  # NoisyNet (Fortunato et al. 2018): factorised Gaussian NoisyLinear for every linear layer
    noisy_std: float = 0.5  # sigma_0; evaluation uses the mean weights
    v_min: float = -10.0  # the support's ends, in units of discounted return
    v_max: float = 10.0
    # none | layer: LayerNorm after every hidden layer, before its activation (Ba et al. 2016;
    # PQN's, Gallici et al. 2025, which needs no target network with it)
    norm: str = "none"
    # DrQ's image augmentation of every sampled batch, s and s' alike (Kostrikov et al. 2020; Yarats
    # et al. 2021): a random shift (edge padding of augment_pad pixels, then a random crop back to the
    # frame's size, one per sample) and intensity noise x * (1 + augment_intensity * clip(N(0, 1), -2, 2))
    augment: bool = False
    augment_pad: int = 4  # pixels
    augment_intensity: float = 0.05  # 0 = shifts only


@dataclass
class ReplayConfig:
    name: str = "uniform"  # uniform | prioritized
    capacity: int = 100_000  # transitions kept, summed over envs
    n_step: int = 1  # n-step returns; the TD target bootstraps with gamma**n
    # prioritized replay (Schaul et al. 2016, proportional variant)
    alpha: float = 0.6  # priority exponent: P(i) ~ (|delta_i| + eps)**alpha
    beta_start: float = 0.4  # importance-weight exponent at step 0, annealed linearly to beta_end
    beta_end: float = 1.0  # reached at env step beta_steps
    # env steps of beta's annealing; None = the run's first total_steps (kept on resume)
    beta_steps: Optional[int] = None
    eps: float = 1e-6  # added to |delta| so no transition has zero priority


@dataclass
class ScheduleConfig:
    name: str = "linear"  # linear | piecewise | exponential
    epsilon_start: float = 1.0  # exploration epsilon at step 0
    epsilon_end: float = 0.05  # final epsilon
    epsilon_decay_steps: int = 10_000  # linear: steps to reach the end; exponential: e-folding steps
    points: List[Any] = field(default_factory=list)  # piecewise: [[step, epsilon], ...]


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | radam | rmsprop
    lr: float = 1e-3  # learning rate (at env step 0 when annealed)
    lr_end: Optional[float] = None  # linear annealing to this rate at lr_decay_steps; None = lr throughout
    lr_decay_steps: Optional[int] = None  # env steps; None = the run's first total_steps (kept on resume)
    eps: float = 1e-8  # denominator epsilon (Adam) or RMSprop epsilon
    weight_decay: float = 0.0  # L2 (adam, rmsprop) or decoupled (adamw) decay
    alpha: float = 0.95  # RMSprop smoothing constant
    momentum: float = 0.0  # RMSprop momentum
    max_grad_norm: Optional[float] = 10.0  # clip the global gradient norm; null = no clipping


@dataclass
class PQNConfig:
    """algo=pqn (Gallici et al. 2025): no replay buffer, no target network; each rollout of
    env.num_envs x rollout_steps transitions trains for `epochs` passes in `minibatches` minibatches."""

    rollout_steps: int = 32  # vector steps per rollout (per env)
    epochs: int = 2  # passes over each rollout
    minibatches: int = 32  # minibatches per pass; each holds num_envs * rollout_steps / minibatches transitions
    q_lambda: float = 0.65  # lambda of the Q(lambda) returns
    reward_scale: float = 1.0  # rewards are multiplied by it in the returns (Q values come out in its units)


@dataclass
class EvalConfig:
    every: int = 10_000  # env steps between evaluations during training; 0 = only at the end
    episodes: int = 10  # episodes per evaluation
    epsilon: float = 0.0  # exploration during evaluation (0 = greedy)
    max_episode_steps: Optional[int] = None  # evaluation-only cap in agent steps; episodes cut by it are counted
    final_episodes: Optional[int] = None  # episodes of the final evaluation (summary.json); null = episodes
    video: bool = False  # record one episode into TensorBoard at each evaluation


@dataclass
class CheckpointConfig:
    every: int = 10_000  # env steps between checkpoints; 0 = only at the end
    keep: int = 3  # step-numbered checkpoints kept (last.pt is extra)
    save_replay: bool = False  # also save the replay buffer (replay.npz beside the checkpoints)


@dataclass
class WandbConfig:
    enabled: bool = False  # tracker=wandb turns it on
    project: str = "dqn"
    entity: Optional[str] = None  # a W&B team or user; None = your default entity
    mode: str = "online"  # online | offline (written under the run dir; wandb sync later) | disabled
    tags: List[str] = field(default_factory=list)  # beside the algo, the env and the seed


@dataclass
class MlflowConfig:
    enabled: bool = False  # tracker=mlflow turns it on
    tracking_uri: str = "sqlite:///mlflow.db"  # relative to the working dir; or a server, http://host:5000
    experiment: str = "dqn"  # a --multirun sweep is a parent run in it, its jobs the children


@dataclass
class TrackerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    pqn: PQNConfig = field(default_factory=PQNConfig)  # read by algo=pqn only
    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # TensorBoard always; W&B, MLflow too
    algo: str = "dqn"  # the algo preset the run was composed with (configs/algo/); its switches are the keys below
    seed: int = 1
    total_steps: int = 50_000  # env steps summed over all envs
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gamma: float = 0.99  # discount per env step
    double_q: bool = True  # double Q-learning target, van Hasselt et al. 2016
    batch_size: int = 64  # transitions per gradient step
    train_every: int = 1  # env steps per gradient step
    learning_starts: int = 1_000  # env steps of pure exploration before the first update
    target_update_period: int = 500  # env steps between target network updates
    tau: float = 1.0  # target <- tau * online + (1 - tau) * target at each update; 1 = hard copy
    loss: str = "huber"  # huber | mse
    log_every: int = 1_000  # env steps between training scalars / log lines
    progress: str = "auto"  # auto (bar on a terminal) | bar | log | off
    torch_threads: int = 0  # 0 = the cores the env workers leave (at least 1)
    compile: bool = False  # torch.compile the update and acting (CUDA: CUDA graphs); dqn bench update measures it
    resume: Optional[str] = None  # a run directory to continue


@dataclass
class EvalCommandConfig:
    checkpoint: Optional[str] = None  # a .pt checkpoint or a run dir (its last.pt); required
    episodes: int = 10
    seed: int = 12_345
    epsilon: Optional[float] = None  # None = the checkpoint's eval epsilon
    max_episode_steps: Optional[int] = None  # None = the run's eval.max_episode_steps
    which: str = "last"  # with a run dir: last (checkpoints/last.pt) | best (checkpoints/best.pt)
    video: bool = False  # write an mp4 of the episodes into the eval run dir
    device: str = "auto"
    imports: List[str] = field(default_factory=list)  # modules the checkpoint's env may import (trusted runs only)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalCommandConfig)


def to_train_config(cfg: DictConfig | dict, strict: bool = False) -> TrainConfig:
    """Turn a composed (or saved) config into plain dataclasses.

    Keys that are not part of the schema (``hydra``) are dropped, so a
    ``.hydra/config.yaml`` or the config inside a checkpoint loads back; with ``strict`` (the
    command line's config) an unknown top-level key (``+foo=1``) is refused instead.
    """
    base = OmegaConf.structured(TrainConfig)
    try:  # ${...} resolved here: a missing key, or a value that does not fit its type, is bad input
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except Exception as err:  # omegaconf's InterpolationResolutionError / ValidationError
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{key}: {_first_line(err)}" if key else _first_line(err)) from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in data if k not in known and k != "hydra")
    if strict and unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}: dqn train has no such setting (dqn train --help lists them; "
            "a group's keys are written group.key, e.g. optimizer.lr)"
        )
    data = {k: v for k, v in data.items() if k in known}
    try:
        merged = OmegaConf.merge(base, data)
    except Exception as err:  # omegaconf's ValidationError / ConfigKeyError
        raise ConfigError(_first_line(err)) from None
    return OmegaConf.to_object(merged)


# A node interpolation (${env.game}) reads the config's own values; anything else in ${...} is a
# resolver call (${oc.env:TOKEN}) that reads the machine: stored configs may hold only the former.
_NODE_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][\w.]*\}")


def _leaves(data: Any, prefix: str = ""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            yield from _leaves(value, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), data


def stored_imports(data: dict) -> list[str]:
    """The modules a stored config would make dqn import: env.imports, and the module of an
    env.id of Gymnasium's ``module:EnvId`` form (gymnasium.make imports it)."""
    env = data.get("env") if isinstance(data, dict) else None
    env = env if isinstance(env, dict) else {}
    modules = [str(m) for m in (env.get("imports") or [])]
    env_id = str(env.get("id") or "")
    if ":" in env_id:
        modules.append(env_id.split(":", 1)[0])
    return modules


def check_stored(data: Any, source: str, allowed_imports=()) -> dict:
    """Refuse what would make loading a stored config (a run dir's, a checkpoint's) run anything:
    a resolver interpolation (${oc.env:...}), or modules to import that the caller has not allowed
    (``allowed_imports``: given now on the command line or to ``dqn_cli.load``). Returns ``data``.

    A run dir or checkpoint from elsewhere is data: it never makes dqn import or run what it names.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the stored config is not a mapping of keys; it is not a dqn run's config")
    for key, value in _leaves(data):
        if isinstance(value, str) and "${" in _NODE_INTERPOLATION.sub("", value):
            raise ConfigError(
                f"{source}: {key} holds an interpolation that reads the machine (${{...:...}}); "
                "a stored config is data and is never resolved"
            )
    refused = [m for m in stored_imports(data) if m not in set(allowed_imports)]
    if refused:
        names = ",".join(refused)
        raise ConfigError(
            f"{source} asks to import {names}; a stored run never imports code by itself: if you trust it, "
            f"allow it with env.imports=[{names}] (dqn train resume=...), imports=[{names}] (dqn eval) "
            f"or dqn_cli.load(..., imports=[{names!r}])"
        )
    return data


def check_finite(cfg: Any, prefix: str = "") -> None:
    """Refuse inf and nan in any float of a (nested) dataclass config, naming the key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            _check(math.isfinite(value), f"{prefix}{f.name} must be a finite number, got {value}")


def to_dict(cfg: Any) -> dict:
    """A dataclass config as nested plain containers (safe to torch.save)."""
    return dataclasses.asdict(cfg)


def flat_items(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-4}}`` -> ``{"optimizer.lr": 1e-4}``: a nested config's leaves
    under dotted keys, the values as they are."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_items(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# network.activation -> the torch.nn layer class it names (the one list of allowed activations)
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "elu": "ELU", "gelu": "GELU", "silu": "SiLU"}
ENV_KINDS = ("classic", "atari", "minatar")
DISTRIBUTIONAL = ("none", "c51", "qr")
NETWORKS = ("mlp", "nature_cnn", "minatar_cnn")
ALGOS = ("dqn", "c51", "qr_dqn", "rainbow", "nature_dqn", "pqn", "der", "drq_eps")  # configs/algo/*.yaml
# The 26 games of the Atari 100k benchmark (Kaiser et al. 2020, "Model-Based Reinforcement Learning
# for Atari"; the set of van Hasselt et al. 2019 and Agarwal et al. 2021), as ale-py names them.
ATARI_100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown",
)  # fmt: skip
SUITES = {"atari100k": ATARI_100K_GAMES}
OPTIMIZERS = ("adam", "adamw", "radam", "rmsprop")
NETWORKS_FOR = {"classic": ("mlp",), "atari": ("nature_cnn",), "minatar": ("minatar_cnn", "mlp")}  # per env kind


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every value that types alone cannot, group by group; raise ConfigError naming the key.

    Runs before any environment or buffer exists. Fixes the horizons that default to the run's
    first ``total_steps`` (``replay.beta_steps``, ``optimizer.lr_decay_steps``).
    """
    check_finite(cfg)
    _check_env(cfg.env)
    _check_network(cfg.network, cfg.env)
    _check_replay(cfg.replay, cfg.env, cfg.total_steps, cfg.batch_size)
    _check_schedule(cfg.schedule)
    _check_optimizer(cfg.optimizer, cfg.total_steps)
    _check_training(cfg)
    if cfg.algo == "pqn":
        _check_pqn(cfg)
    _check_eval(cfg.eval)
    _check_checkpoint(cfg.checkpoint)
    _check_tracker(cfg.tracker)
    check_device(cfg.device)
    return cfg


def _check_tracker(t: TrackerConfig) -> None:
    """The modes, and that a chosen tracker is installed (before anything starts)."""
    import importlib.util

    _check(
        t.wandb.mode in ("online", "offline", "disabled"),
        f"tracker.wandb.mode must be online, offline or disabled, got {t.wandb.mode!r}",
    )
    for name, on in (("wandb", t.wandb.enabled), ("mlflow", t.mlflow.enabled)):
        _check(
            not on or importlib.util.find_spec(name) is not None,
            f"tracker={name} needs the {name} package: pip install 'dqn-cli[{name}]' (or pip install -e '.[{name}]')",
        )


def _check_env(e: EnvConfig) -> None:
    _check(e.kind in ENV_KINDS, f"env.kind must be one of {', '.join(ENV_KINDS)}, got {e.kind!r}")
    _check(e.num_envs >= 1, f"env.num_envs must be >= 1, got {e.num_envs}")
    _check(e.worker_restarts >= 0, f"env.worker_restarts must be >= 0, got {e.worker_restarts}")
    backends = {"atari": ("sync", "async", "ale", "envpool"), "classic": ("sync", "async", "envpool")}.get(
        e.kind, ("sync", "async")
    )
    _check(
        e.vectorization in backends,
        f"env.vectorization must be one of {', '.join(backends)} for {e.kind} envs, got {e.vectorization!r}",
    )
    _check(e.frame_stack >= 1, f"env.frame_stack must be >= 1, got {e.frame_stack}")
    _check(
        e.max_episode_steps is None or e.max_episode_steps >= 1,
        f"env.max_episode_steps must be >= 1 or null, got {e.max_episode_steps}",
    )
    if e.kind in ("atari", "minatar"):
        _check(
            0.0 <= e.sticky_action_prob < 1.0,
            f"env.sticky_action_prob must be in [0, 1), got {e.sticky_action_prob}",
        )
    if e.kind == "atari":
        _check(e.frame_skip >= 1, f"env.frame_skip must be >= 1, got {e.frame_skip}")
        _check(e.noop_max >= 0, f"env.noop_max must be >= 0, got {e.noop_max}")
        _check(e.screen_size >= 8, f"env.screen_size must be >= 8 pixels, got {e.screen_size}")
    _check(
        e.suite is None or (e.suite in SUITES and e.kind == "atari"),
        f"env.suite must be null or atari100k (an Atari suite), got {e.suite!r} with env.kind={e.kind}",
    )
    if e.suite is not None:
        games = SUITES[e.suite]
        key = "".join(ch for ch in str(e.game).lower() if ch.isalnum())
        named = {g.lower(): g for g in games}
        _check(
            key in named,
            f"env.game={e.game!r} is not one of the {len(games)} games of {e.suite}: {', '.join(games)}",
        )
        e.game = named[key]  # the benchmark's spelling, in run dirs and tables alike


def _check_network(n: NetworkConfig, e: EnvConfig) -> None:
    _check(n.name in NETWORKS, f"network must be one of {', '.join(NETWORKS)}, got {n.name!r}")
    _check(
        n.activation in ACTIVATIONS,
        f"network.activation must be one of {', '.join(ACTIVATIONS)}, got {n.activation!r}",
    )
    _check(
        n.dueling_aggregator in ("mean", "max"),
        f"network.dueling_aggregator must be mean or max, got {n.dueling_aggregator!r}",
    )
    _check(all(h >= 1 for h in n.hidden_sizes), f"network.hidden_sizes must be positive, got {n.hidden_sizes}")
    _check(
        n.name != "mlp" or len(n.hidden_sizes) > 0,
        "network.hidden_sizes=[] would make the Q-network linear; give at least one layer, e.g. [64]",
    )
    _check(n.cnn_hidden >= 1, f"network.cnn_hidden must be >= 1, got {n.cnn_hidden}")
    _check(
        n.distributional in DISTRIBUTIONAL,
        f"network.distributional must be one of {', '.join(DISTRIBUTIONAL)}, got {n.distributional!r}",
    )
    _check(n.atoms >= 2, f"network.atoms must be >= 2, got {n.atoms}")
    _check(n.quantiles >= 1, f"network.quantiles must be >= 1, got {n.quantiles}")
    _check(n.noisy_std > 0, f"network.noisy_std must be > 0, got {n.noisy_std}")
    _check(n.v_min < n.v_max, f"network.v_min must be < network.v_max, got [{n.v_min}, {n.v_max}]")
    _check(n.norm in ("none", "layer"), f"network.norm must be none or layer, got {n.norm!r}")
    _check(n.augment_pad >= 0, f"network.augment_pad must be >= 0 pixels, got {n.augment_pad}")
    _check(n.augment_intensity >= 0, f"network.augment_intensity must be >= 0, got {n.augment_intensity}")
    _check(
        not n.augment or e.kind != "classic",
        f"network.augment=true shifts image observations, and {e.label} has none; "
        "use it with env=atari100k, atari or minatar (algo=drq_eps is for env=atari100k)",
    )
    fits = NETWORKS_FOR[e.kind]
    _check(
        n.name in fits,
        f"network={n.name} cannot read {e.kind} observations ({e.label}); use network={' or network='.join(fits)}",
    )


def _check_replay(r: ReplayConfig, e: EnvConfig, total_steps: int, batch_size: int) -> None:
    _check(r.name in ("uniform", "prioritized"), f"replay must be uniform or prioritized, got {r.name!r}")
    _check(r.capacity >= 1, f"replay.capacity must be >= 1 transition, got {r.capacity}")
    _check(r.n_step >= 1, f"replay.n_step must be >= 1, got {r.n_step}")
    _check(r.alpha >= 0, f"replay.alpha must be >= 0, got {r.alpha}")
    _check(0 <= r.beta_start <= 1, f"replay.beta_start must be in [0, 1], got {r.beta_start}")
    _check(0 <= r.beta_end <= 1, f"replay.beta_end must be in [0, 1], got {r.beta_end}")
    _check(r.eps > 0, f"replay.eps must be > 0, got {r.eps}")
    _check(r.beta_steps is None or r.beta_steps >= 1, f"replay.beta_steps must be >= 1 or null, got {r.beta_steps}")
    if r.beta_steps is None:  # fixed now, recorded in the run's config: a resume with a new total_steps keeps it
        r.beta_steps = total_steps
    _check(
        r.capacity >= e.num_envs * (r.n_step + e.frame_stack + 2),
        f"replay.capacity={r.capacity} is too small for {e.num_envs} envs with n_step={r.n_step} "
        f"and frame_stack={e.frame_stack}; use at least {e.num_envs * (r.n_step + e.frame_stack + 2)}",
    )
    _check(
        batch_size <= r.capacity,
        f"batch_size={batch_size} is larger than replay.capacity={r.capacity}; use a batch <= capacity",
    )


def _check_schedule(s: ScheduleConfig) -> None:
    _check(
        s.name in ("linear", "piecewise", "exponential"),
        f"schedule must be linear, piecewise or exponential, got {s.name!r}",
    )
    for key in ("epsilon_start", "epsilon_end"):
        v = getattr(s, key)
        _check(0.0 <= v <= 1.0, f"schedule.{key} must be in [0, 1], got {v}")
    _check(s.epsilon_decay_steps >= 1, f"schedule.epsilon_decay_steps must be >= 1, got {s.epsilon_decay_steps}")
    _check(
        s.name == "piecewise" or not s.points,
        f"schedule.points is read by schedule=piecewise only; add schedule=piecewise (now schedule={s.name})",
    )
    if s.name == "piecewise":
        pts = s.points
        _check(
            len(pts) >= 1 and all(len(p) == 2 for p in pts),
            "schedule.points must be a non-empty list of [step, epsilon] pairs, e.g. [[0,1.0],[10000,0.05]]",
        )
        steps = [p[0] for p in pts]
        _check(steps == sorted(steps), f"schedule.points steps must increase, got {steps}")
        _check(all(0 <= p[1] <= 1 for p in pts), "schedule.points epsilons must be in [0, 1]")


def _check_optimizer(o: OptimizerConfig, total_steps: int) -> None:
    _check(o.name in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
    _check(o.lr > 0, f"optimizer.lr must be > 0, got {o.lr}")
    _check(o.lr_end is None or o.lr_end >= 0, f"optimizer.lr_end must be >= 0 or null, got {o.lr_end}")
    _check(
        o.lr_decay_steps is None or o.lr_decay_steps >= 1,
        f"optimizer.lr_decay_steps must be >= 1 or null, got {o.lr_decay_steps}",
    )
    if o.lr_end is not None and o.lr_decay_steps is None:  # fixed now, as replay.beta_steps
        o.lr_decay_steps = total_steps
    _check(o.eps > 0, f"optimizer.eps must be > 0, got {o.eps}")
    _check(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    _check(
        o.max_grad_norm is None or o.max_grad_norm > 0,
        f"optimizer.max_grad_norm must be > 0 or null, got {o.max_grad_norm}",
    )


def _check_training(cfg: TrainConfig) -> None:
    """The top-level keys."""
    _check(cfg.algo in ALGOS, f"algo must be one of {', '.join(ALGOS)}, got {cfg.algo!r}")
    _check(
        1 <= cfg.total_steps <= 10**12,
        f"total_steps must be in [1, 10^12] env steps (10^12 is years of training), got {cfg.total_steps}",
    )
    _check(0 < cfg.gamma <= 1, f"gamma must be in (0, 1], got {cfg.gamma}")
    _check(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    _check(cfg.train_every >= 1, f"train_every must be >= 1 env step, got {cfg.train_every}")
    _check(cfg.learning_starts >= 0, f"learning_starts must be >= 0, got {cfg.learning_starts}")
    _check(
        cfg.algo == "pqn" or cfg.total_steps - cfg.learning_starts >= cfg.train_every,  # (PQN learns from step 0)
        f"learning_starts={cfg.learning_starts} with train_every={cfg.train_every} leaves no gradient step in "
        f"total_steps={cfg.total_steps}; use learning_starts <= {max(cfg.total_steps - cfg.train_every, 0)}",
    )
    _check(cfg.target_update_period >= 1, f"target_update_period must be >= 1, got {cfg.target_update_period}")
    _check(0 < cfg.tau <= 1, f"tau must be in (0, 1], got {cfg.tau}")
    _check(cfg.loss in ("huber", "mse"), f"loss must be huber or mse, got {cfg.loss!r}")
    _check(cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}")
    _check(
        cfg.progress in ("auto", "bar", "log", "off"), f"progress must be auto, bar, log or off, got {cfg.progress!r}"
    )
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")


def _check_pqn(cfg: TrainConfig) -> None:
    """algo=pqn: its rollout fits the budget, and the network has a plain Q head."""
    p, E = cfg.pqn, cfg.env.num_envs
    _check(p.rollout_steps >= 1, f"pqn.rollout_steps must be >= 1, got {p.rollout_steps}")
    _check(p.epochs >= 1, f"pqn.epochs must be >= 1, got {p.epochs}")
    _check(
        1 <= p.minibatches <= E * p.rollout_steps,
        f"pqn.minibatches must be in [1, env.num_envs * pqn.rollout_steps = {E * p.rollout_steps}], "
        f"got {p.minibatches}",
    )
    _check(0 <= p.q_lambda <= 1, f"pqn.q_lambda must be in [0, 1], got {p.q_lambda}")
    _check(p.reward_scale > 0, f"pqn.reward_scale must be > 0, got {p.reward_scale}")
    _check(
        cfg.network.distributional == "none" and not cfg.network.noisy,
        "algo=pqn learns expected Q-values with epsilon-greedy exploration; "
        "set network.distributional=none and network.noisy=false",
    )


def _check_eval(v: EvalConfig) -> None:
    _check(v.every >= 0, f"eval.every must be >= 0, got {v.every}")
    _check(v.episodes >= 0, f"eval.episodes must be >= 0 (0 skips evaluations), got {v.episodes}")
    _check(
        v.max_episode_steps is None or v.max_episode_steps >= 1,
        f"eval.max_episode_steps must be >= 1 or null, got {v.max_episode_steps}",
    )
    _check(0 <= v.epsilon <= 1, f"eval.epsilon must be in [0, 1], got {v.epsilon}")
    _check(
        v.final_episodes is None or v.final_episodes >= 1,
        f"eval.final_episodes must be >= 1 or null (= eval.episodes), got {v.final_episodes}",
    )


def _check_checkpoint(c: CheckpointConfig) -> None:
    _check(c.every >= 0, f"checkpoint.every must be >= 0, got {c.every}")
    _check(c.keep >= 1, f"checkpoint.keep must be >= 1, got {c.keep}")


WHICH = ("last", "best")  # the checkpoints of a run dir that dqn eval and dqn_cli.load pick from


def check_which(which: str) -> None:
    _check(which in WHICH, f"which must be last or best, got {which!r}")


def validate_eval(cfg: EvalCommandConfig) -> EvalCommandConfig:
    """``dqn eval``'s values, checked before anything starts (the checkpoint's own config is
    checked as it loads). Raises ConfigError naming the key."""
    _check(
        bool(cfg.checkpoint),
        "checkpoint= is required: dqn eval checkpoint=outputs/DATE/TIME_cartpole/checkpoints/last.pt",
    )
    _check(cfg.episodes >= 1, f"episodes must be >= 1, got {cfg.episodes}")
    _check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    _check(cfg.epsilon is None or 0 <= cfg.epsilon <= 1, f"epsilon must be in [0, 1], got {cfg.epsilon}")
    _check(
        cfg.max_episode_steps is None or cfg.max_episode_steps >= 1,
        f"max_episode_steps must be >= 1 or null, got {cfg.max_episode_steps}",
    )
    check_which(cfg.which)
    check_device(cfg.device)
    return cfg


def check_device(device: str) -> None:
    ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    _check(ok, f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
