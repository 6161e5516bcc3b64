"""Q-networks: a torso (MLP, Nature CNN or MinAtar CNN) and a head (plain or dueling), with
expected Q-values, C51's categorical or QR-DQN's quantile returns, and optional noisy layers.

Input ``obs``: the stacked observation as stored in replay, shape
``(B, frame_stack, *frame_shape)``; float32 for classic envs, uint8 frames
``(B, 4, 84, 84)`` for Atari (scaled to [0, 1] here, on the device), uint8
0/1 frames ``(B, 1, C, 10, 10)`` for MinAtar.
Output of ``forward``: Q-values, float32 ``(B, n_actions)`` (a distribution's mean).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import nn

from dqn_cli.config import ACTIVATIONS, ConfigError, NetworkConfig
from dqn_cli.runtime import available_memory_bytes


def activation_layer(name: str) -> nn.Module:
    """The torch.nn layer of ``network.activation`` (config.ACTIVATIONS)."""
    return getattr(nn, ACTIVATIONS[name])()


def norm_layer(kind: str, features: int, conv: bool = False) -> nn.Module:
    """``network.norm``: nothing, or LayerNorm (Ba et al. 2016) over a hidden layer's ``features``
    units; after a conv layer over its whole (C, H, W) output (GroupNorm with one group), as
    CleanRL's PyTorch port of PQN normalises its conv layers."""
    if kind == "none":
        return nn.Identity()
    return nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)


class NoisyLinear(nn.Module):
    """Fortunato et al. 2018 (NoisyNet), factorised Gaussian noise:
    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = f(eps_out) f(eps_in)^T,
    eps_b = f(eps_out), f(x) = sgn(x) sqrt(|x|). mu ~ U(-1/sqrt(p), 1/sqrt(p)), sigma = sigma_0 / sqrt(p)
    for p inputs. :meth:`reset_noise` draws new eps (torch's global generator); in eval mode the
    layer uses the mean weights only.

    The noisy weight is never formed: (sigma_w * eps_w) x = f(eps_out) * (sigma_w (f(eps_in) * x)),
    the same function as two products of the layer's size, where forming mu_w + sigma_w * eps_w
    took three elementwise passes over all its weights at every forward pass (and their
    gradients another), most of a data-efficient Rainbow update's time on a CPU.
    """

    def __init__(self, in_features: int, out_features: int, std_init: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = in_features**-0.5
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), std_init * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), std_init * bound))
        # f(eps_in), f(eps_out); not part of a checkpoint: drawn again before every use
        self.register_buffer("epsilon_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("epsilon_out", torch.zeros(out_features), persistent=False)
        self.reset_noise()

    @torch.no_grad()
    def reset_noise(self) -> None:
        def f(n: int) -> torch.Tensor:
            x = torch.randn(n, device=self.weight_mu.device)
            return x.sign() * x.abs().sqrt()

        self.epsilon_in.copy_(f(self.in_features))
        self.epsilon_out.copy_(f(self.out_features))

    @property
    def weight_epsilon(self) -> torch.Tensor:
        """eps_w (out_features, in_features), formed here for inspection only."""
        return torch.outer(self.epsilon_out, self.epsilon_in)

    @property
    def bias_epsilon(self) -> torch.Tensor:
        """eps_b = f(eps_out) (out_features,)."""
        return self.epsilon_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        bias = self.bias_mu + self.bias_sigma * self.epsilon_out
        noise = nn.functional.linear(x * self.epsilon_in, self.weight_sigma) * self.epsilon_out
        return nn.functional.linear(x, self.weight_mu, bias) + noise


Linear = Callable[[int, int], nn.Module]  # nn.Linear, or NoisyLinear for network.noisy


def noisy_layers(module: nn.Module) -> list[NoisyLinear]:
    """The NoisyLinear layers of ``module`` (none without network.noisy)."""
    return [m for m in module.modules() if isinstance(m, NoisyLinear)]


class MLPTorso(nn.Module):
    """Flatten the stacked observation, then Linear(+norm)+activation layers."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        hidden_sizes: Sequence[int],
        activation: str,
        linear: Linear = nn.Linear,
        norm: str = "none",
    ):
        super().__init__()
        in_dim = 1
        for d in obs_shape:
            in_dim *= int(d)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden_sizes:
            layers += [linear(in_dim, width), norm_layer(norm, width), activation_layer(activation)]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs.float())


class NatureCNNTorso(nn.Module):
    """Mnih et al. 2015: conv 32@8x8/4, 64@4x4/2, 64@3x3/1, then fc ``hidden``.

    ``obs``: uint8 ``(B, C, H, W)``, divided by 255 on the device.
    """

    def __init__(
        self, obs_shape: Sequence[int], hidden: int, activation: str, linear: Linear = nn.Linear, norm: str = "none"
    ):
        super().__init__()

        act = functools.partial(activation_layer, activation)
        c, h, w = (int(d) for d in obs_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4),
            norm_layer(norm, 32, conv=True),
            act(),
            nn.Conv2d(32, 64, 4, stride=2),
            norm_layer(norm, 64, conv=True),
            act(),
            nn.Conv2d(64, 64, 3, stride=1),
            norm_layer(norm, 64, conv=True),
            act(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(linear(flat, hidden), norm_layer(norm, hidden), act())
        self.out_dim = hidden
        # NHWC ("channels_last") weights and activations: oneDNN's and cuDNN's fast convolution
        # layout (PyTorch's channels_last tutorial); 1.2-1.35x faster updates measured on CPUs
        # here. The values are the same convolution's; only the memory order differs.
        self.conv.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # the layout changes on the uint8 frames, a quarter of the bytes of their floats; the
        # division promotes them to float32 in the same pass (the values of .float() / 255)
        x = torch.div(obs.contiguous(memory_format=torch.channels_last), 255.0)
        return self.fc(self.conv(x))


class MinAtarCNNTorso(nn.Module):
    """Young & Tian 2019: conv 16@3x3/1, ReLU, then fc ``hidden`` (128 in the paper).

    ``obs``: uint8 ``(B, S, C, 10, 10)`` with values 0/1; the S stacked frames'
    channels are the conv's input channels (S = 1 in the MinAtar preset).
    """

    def __init__(
        self, obs_shape: Sequence[int], hidden: int, activation: str, linear: Linear = nn.Linear, norm: str = "none"
    ):
        super().__init__()

        act = functools.partial(activation_layer, activation)
        s, c, h, w = (int(d) for d in obs_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(s * c, 16, 3, stride=1), norm_layer(norm, 16, conv=True), act(), nn.Flatten()
        )
        self.fc = nn.Sequential(linear(16 * (h - 2) * (w - 2), hidden), norm_layer(norm, hidden), act())
        self.out_dim = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(obs.flatten(1, 2).float()))


class DuelingHead(nn.Module):
    """Wang et al. 2016: Q = V + (A - agg(A)), agg = mean (eq. 9) or max (eq. 8).

    With ``atoms`` > 1 the streams give one value per atom (Rainbow's dueling C51, Hessel et al.
    2018): the output is (B, A, atoms) logits, aggregated over the actions; else (B, A).
    """

    def __init__(
        self, in_dim: int, n_actions: int, aggregator: str = "mean", atoms: int = 1, linear: Linear = nn.Linear
    ):
        super().__init__()
        self.value = linear(in_dim, atoms)
        self.advantage = linear(in_dim, n_actions * atoms)
        self.aggregator = aggregator
        self.n_actions, self.atoms = n_actions, atoms

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        v = self.value(features).unsqueeze(1)  # (B, 1, atoms)
        a = self.advantage(features).view(-1, self.n_actions, self.atoms)  # (B, A, atoms)
        if self.aggregator == "max":
            out = v + a - a.max(dim=1, keepdim=True).values
        else:
            out = v + a - a.mean(dim=1, keepdim=True)
        return out.squeeze(-1) if self.atoms == 1 else out


class QNetwork(nn.Module):
    """torso -> head. ``forward(obs)`` gives Q-values ``(B, n_actions)``."""

    def __init__(self, torso: nn.Module, head: nn.Module):
        super().__init__()
        self.torso = torso
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


class DistributionalQNetwork(QNetwork):
    """C51 (Bellemare et al. 2017): per action, a categorical distribution of the return over a
    fixed support of ``atoms`` values. ``forward(obs)`` gives its mean, the Q-values (B, A), so
    acting and evaluation read it as any Q-network; :meth:`log_probs` gives (B, A, atoms)."""

    def __init__(self, torso: nn.Module, head: nn.Module, n_actions: int, support: torch.Tensor):
        super().__init__(torso, head)
        self.n_actions = n_actions
        self.register_buffer("support", support)  # float32 (atoms,), evenly spaced on [v_min, v_max]

    def log_probs(self, obs: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.torso(obs)).view(-1, self.n_actions, self.support.numel())
        return torch.log_softmax(logits, dim=-1)

    def mean(self, log_probs: torch.Tensor) -> torch.Tensor:
        """The expected return of each distribution, (...,) from log-probabilities (..., atoms)."""
        return (log_probs.exp() * self.support).sum(dim=-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean(self.log_probs(obs))


class QuantileQNetwork(QNetwork):
    """QR-DQN (Dabney et al. 2018): per action, N quantiles of the return at the midpoints
    tau_i = (2i + 1) / 2N. ``forward(obs)`` gives their mean, the Q-values (B, A);
    :meth:`quantile_values` gives (B, A, N)."""

    def __init__(self, torso: nn.Module, head: nn.Module, n_actions: int, quantiles: int):
        super().__init__(torso, head)
        self.n_actions, self.quantiles = n_actions, quantiles
        self.register_buffer("taus", (2 * torch.arange(quantiles, dtype=torch.float32) + 1) / (2 * quantiles))

    def quantile_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs)).view(-1, self.n_actions, self.quantiles)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.quantile_values(obs).mean(dim=-1)


def build_network(cfg: NetworkConfig, obs_shape: Sequence[int], n_actions: int) -> QNetwork:
    """A Q-network for stacked observations of ``obs_shape`` = (frame_stack, *frame_shape)."""
    linear: Linear = functools.partial(NoisyLinear, std_init=cfg.noisy_std) if cfg.noisy else nn.Linear
    if cfg.name == "mlp":
        torso: nn.Module = MLPTorso(obs_shape, cfg.hidden_sizes, cfg.activation, linear, cfg.norm)
    elif cfg.name == "nature_cnn":
        if len(obs_shape) != 3:
            raise ValueError(f"nature_cnn needs (C, H, W) observations, got shape {tuple(obs_shape)}")
        torso = NatureCNNTorso(obs_shape, cfg.cnn_hidden, cfg.activation, linear, cfg.norm)
    elif cfg.name == "minatar_cnn":
        if len(obs_shape) != 4:
            raise ValueError(f"minatar_cnn needs (S, C, H, W) observations, got shape {tuple(obs_shape)}")
        torso = MinAtarCNNTorso(obs_shape, cfg.cnn_hidden, cfg.activation, linear, cfg.norm)
    else:
        raise ValueError(f"unknown network {cfg.name!r}")
    atoms = {"c51": cfg.atoms, "qr": cfg.quantiles}.get(cfg.distributional, 1)
    head: nn.Module
    if cfg.dueling:
        head = DuelingHead(torso.out_dim, n_actions, cfg.dueling_aggregator, atoms, linear)
    else:
        head = linear(torso.out_dim, n_actions * atoms)
    if cfg.distributional == "c51":
        support = torch.linspace(cfg.v_min, cfg.v_max, atoms, dtype=torch.float32)
        return DistributionalQNetwork(torso, head, n_actions, support)
    if cfg.distributional == "qr":
        return QuantileQNetwork(torso, head, n_actions, atoms)
    return QNetwork(torso, head)


def check_network_fits(cfg: NetworkConfig, obs_shape: Sequence[int], n_actions: int, device: torch.device) -> None:
    """Refuse, before anything starts, a Q-network whose training state would not fit in memory:
    its parameters counted on PyTorch's meta device (no memory), times 5 float32 copies (online,
    target, gradients and Adam's two moments). Raises ConfigError."""
    with torch.device("meta"):
        params = sum(p.numel() for p in build_network(cfg, obs_shape, n_actions).parameters())
    needed = 5 * 4 * params
    if device.type == "cuda":
        avail, where = torch.cuda.mem_get_info(device)[0], "GPU memory"
    else:
        avail, where = available_memory_bytes(), "memory"
    if needed > 0.9 * avail:
        raise ConfigError(
            f"the Q-network has {params:,} parameters (network.hidden_sizes={list(cfg.hidden_sizes)}), "
            f"about {needed / 2**30:.1f} GiB to train with its target, gradients and Adam's moments, "
            f"but only {avail / 2**30:.1f} GiB of {where} is available; use smaller network.hidden_sizes"
        )
