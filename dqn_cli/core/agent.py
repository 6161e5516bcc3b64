"""The DQN agent: epsilon-greedy acting, the TD update, the target network.

Mnih et al. 2015 (DQN), van Hasselt et al. 2016 (double Q-learning), Schaul
et al. 2016 (importance weights), Lillicrap et al. 2016 (Polyak targets).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.config import OptimizerConfig
from dqn_cli.core.augment import Augmentation
from dqn_cli.core.networks import DistributionalQNetwork, QuantileQNetwork, noisy_layers

if TYPE_CHECKING:  # the agent reads a Batch's fields only
    from dqn_cli.replay.storage import Batch


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """adam | adamw | radam | rmsprop with the group's lr, eps and weight decay."""
    # Fused/foreach kernels: one op per step instead of one per parameter tensor;
    # on small Q-networks the per-op overhead dominates the update time.
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "radam":  # (no fused kernel in torch)
        return torch.optim.RAdam(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            foreach=True,
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def td_target(
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = R + discount * Q'(s', a*), float32 (B,).

    returns: (B,) n-step reward sums; discounts: (B,) gamma**m * (1 - terminated)
    next_q_target: (B, A) target-network Q-values of the bootstrap observation
    next_q_online: (B, A) online-network Q-values there, for double Q-learning:
        a* = argmax_a Q(s', a) chosen by the online net, valued by the target net.
        Without it a* = argmax_a Q'(s', a) (the DQN target).
    """
    if next_q_online is None:
        bootstrap = next_q_target.max(dim=1).values
    else:
        best = next_q_online.argmax(dim=1, keepdim=True)
        bootstrap = next_q_target.gather(1, best).squeeze(1)
    return returns + discounts * bootstrap


def categorical_projection(
    next_probs: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """The C51 target distribution (Bellemare et al. 2017, Algorithm 1), float32 (B, N).

    next_probs: (B, N) probabilities of the bootstrap distribution Z(s', a*) on ``support`` (N,);
    returns, discounts: (B,) as in :func:`td_target`, so the target atoms are R + discount * z
    (gamma**m for the m steps taken; after termination discount = 0 and all the mass goes to R).
    Each target atom, clipped to [v_min, v_max], splits its mass between its two neighbours on the
    support in proportion to its distance from them.
    """
    n = support.numel()
    v_min, v_max = float(support[0]), float(support[-1])
    delta = (v_max - v_min) / (n - 1)
    tz = (returns[:, None] + discounts[:, None] * support[None, :]).clamp(v_min, v_max)
    b = (tz - v_min) / delta  # fractional index on the support, in [0, N-1]
    lower, upper = b.floor().long(), b.ceil().long()
    target = torch.zeros_like(next_probs)
    target.scatter_add_(1, lower, next_probs * (upper.float() - b))
    target.scatter_add_(1, upper, next_probs * (b - lower.float()))
    target.scatter_add_(1, lower, next_probs * (upper == lower).float())  # b on an atom: all of it there
    return target


def quantile_huber_loss(theta: torch.Tensor, target: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0):
    """QR-DQN's loss per sample (Dabney et al. 2018, eq. 10), (B,).

    theta: (B, N) predicted quantiles at ``taus`` (N,); target: (B, N') target samples.
    sum_i mean_j |tau_i - 1{u_ij < 0}| * L_kappa(u_ij) / kappa, u_ij = target_j - theta_i,
    L_kappa the Huber loss with threshold kappa.
    """
    u = target[:, None, :] - theta[:, :, None]  # (B, N, N')
    # torch's fused Huber kernel: B x N x N' elements make this the update's largest tensor
    huber = F.huber_loss(u, torch.zeros((), dtype=u.dtype, device=u.device).expand_as(u), reduction="none", delta=kappa)
    weight = (taus[None, :, None] - (u.detach() < 0).to(u.dtype)).abs()  # |tau - 1{u < 0}|, as written
    return (weight * huber).mean(dim=2).sum(dim=1) / kappa


def host_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor (pinned, non-blocking copy on CUDA)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def gradient_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor, max_grad_norm):
    """One optimizer step on ``loss``, the global gradient norm of ``params`` clipped to
    ``max_grad_norm`` (None: not clipped). Returns the norm before clipping, a 0-d tensor left on
    the device (reading it is a host sync; the loops read it only when they log).

    The norm and the clip are clip_grad_norm_'s two halves (torch.nn.utils.get_total_norm and
    clip_grads_with_norm_), so the result is clip_grad_norm_'s to the bit, with the norm kept
    for logging.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_grad_norm, norm, foreach=True)
    optimizer.step()
    return norm


def compiled(fn, device: torch.device):
    """torch.compile(fn): on CUDA mode="reduce-overhead" (CUDA graphs: one launch for the whole
    graph, which is what small Q-networks are bound by), elsewhere the default mode."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return torch.compile(fn, mode=mode, dynamic=False)


class EpsilonGreedy:
    """Epsilon-greedy over a batch of envs (Mnih et al. 2015, Algorithm 1): each env takes a
    uniformly random action with probability epsilon, else argmax_a Q(s, a).

    The one exploration policy of the tool: training, evaluation and videos act through it.
    Its numpy generator lives on the host, so its state carries over between devices.
    """

    def __init__(self, n_actions: int, seed: int):
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def __call__(self, q_values: Callable[[], torch.Tensor], num: int, epsilon: float) -> np.ndarray:
        """Actions, int64 (num,). ``q_values()`` returns the (num, A) Q-values; it runs only
        when some env acts greedily. The draws do not depend on the Q-values."""
        explore = self.rng.random(num) < epsilon
        random_actions = self.rng.integers(self.n_actions, size=int(explore.sum()))
        if explore.all():
            return random_actions
        actions = q_values().argmax(dim=1).cpu().numpy().astype(np.int64)
        actions[explore] = random_actions
        return actions


class UpdateInfo(NamedTuple):
    """What one update reports. The tensors stay on the device, so an update costs no host sync
    beyond its loss (checked for finiteness every step); the properties read them."""

    td_loss: float  # mean (weighted) loss of the batch
    q: torch.Tensor  # float (B,) Q(s, a) of the batch, detached
    priorities: torch.Tensor  # float (B,) PER priorities: y - Q(s, a), or the per-sample KL / quantile loss
    grad_norm_tensor: torch.Tensor  # 0-d, the global gradient norm before clipping
    loss_name: str = "td_loss"  # its TensorBoard name: losses/td_loss, or losses/c51_loss

    @property
    def q_values(self) -> float:
        """Mean Q(s, a) of the batch."""
        return float(self.q.float().mean())

    @property
    def grad_norm(self) -> float:
        return float(self.grad_norm_tensor)

    @property
    def td_errors(self) -> np.ndarray:
        """The priorities on the host, float32 (B,)."""
        return self.priorities.float().cpu().numpy()


class QAgent:
    """What every agent here has: one online Q-network, its optimizer, epsilon-greedy acting with a
    seeded generator, and their state for checkpoints. :class:`DQNAgent` adds a target network and
    the TD update from replay; :class:`~dqn_cli.core.pqn.PQNAgent` the λ-return update on rollouts.

    Args:
        q_network: the online network, already on ``device``.
        optimizer_cfg: the optimizer group (lr, eps, weight decay, gradient clipping).
        n_actions: size of the Discrete action space.
        device: where the network and the update live.
        seed: seeds the exploration generator.
    """

    def __init__(self, q_network: nn.Module, optimizer_cfg: OptimizerConfig, n_actions: int, device, seed: int = 0):
        self.q_network = q_network
        self.params = list(q_network.parameters())
        self.optimizer = build_optimizer(optimizer_cfg, self.params)
        self.max_grad_norm = optimizer_cfg.max_grad_norm
        self.n_actions = n_actions
        self.device = device
        self.policy = EpsilonGreedy(n_actions, seed)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor (pinned, non-blocking copy on CUDA)."""
        return host_to_device(array, self.device)

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {
            "q_network": self.q_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "exploration": self.policy.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy.rng.bit_generator.state = state["exploration"]


class DQNAgent(QAgent):
    """Online and target Q-networks, their optimizer, and the TD update (Mnih et al. 2015).

    Args:
        q_network: the online network, already on ``device``.
        optimizer_cfg: the optimizer group (lr, eps, weight decay, gradient clipping).
        n_actions: size of the Discrete action space.
        double_q: double Q-learning target.
        loss: "huber" (smooth L1 with delta 1, as Mnih et al.'s error clipping) or "mse".
        device: where the networks and the update live.
        seed: seeds the exploration generator.
        compile: torch.compile the loss (forward, target and backward graph) and the acting
            forward pass; on CUDA with mode="reduce-overhead", which replays them as CUDA graphs.
            Epsilon stays on the host and the batch shapes are fixed, so neither recompiles.
        augmentation: network.augment's DrQ augmentation of s and s' in every sampled batch
            (independent draws for each), or None.
        shared_target: the target network is the online network itself, for a target period
            of one update (DrQ(eps)'s target_update_period 1 with one update per env step): the
            hard copy before every update would give it the same weights, so none is made.
            Not for noisy nets (each network draws noise of its own).
    """

    def __init__(
        self,
        q_network: nn.Module,
        optimizer_cfg: OptimizerConfig,
        n_actions: int,
        double_q: bool,
        loss: str,
        device: torch.device,
        seed: int = 0,
        compile: bool = False,
        augmentation: Augmentation | None = None,
        shared_target: bool = False,
    ):
        super().__init__(q_network, optimizer_cfg, n_actions, device, seed)
        if shared_target and noisy_layers(q_network):
            raise ValueError("shared_target: noisy nets need a target network of their own")
        self.shared_target = shared_target
        self.target_network = q_network if shared_target else copy.deepcopy(q_network).requires_grad_(False)
        # the tensors update_target pairs up, listed once: walking the modules costs more than the lerp
        self.sync_online, self.sync_target = [], []
        if not shared_target:
            self.sync_online = self.params + list(q_network.buffers())
            self.sync_target = list(self.target_network.parameters()) + list(self.target_network.buffers())
        self.sync_float = (
            [t for t in self.sync_target if t.is_floating_point()],
            [o for o in self.sync_online if o.is_floating_point()],
        )
        self.loss_name = {DistributionalQNetwork: "c51_loss", QuantileQNetwork: "qr_loss"}.get(
            type(q_network), "td_loss"
        )
        self.double_q = double_q
        self.loss = loss
        self.online_noise, self.target_noise = noisy_layers(q_network), noisy_layers(self.target_network)
        self.augmentation = augmentation
        # True while the target network holds the online network's weights (after a hard copy by
        # update_target, before the next gradient step): its values of s' are then the online ones,
        # computed once. With target_update_period=1 (DrQ(eps)) that is every update but the first.
        # Noisy nets draw their own noise, so never for them. Always, for a shared target.
        self.target_is_online = shared_target
        self.losses, self.acting_network = self._losses, q_network
        if compile:
            self.losses, self.acting_network = compiled(self._losses, device), compiled(q_network, device)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions for a batch of envs, int64 (E,); obs: (E, S, *frame_shape)."""
        for layer in self.online_noise:  # NoisyNet: new noise for every acting step
            layer.reset_noise()
        return self.policy(lambda: self.acting_network(self.to_device(obs)), obs.shape[0], epsilon)

    # ---------------------------------------------------------------- learning
    def update(self, batch: Batch) -> UpdateInfo:
        """One gradient step on the (importance-weighted) TD loss of ``batch``."""
        obs = self.to_device(batch.obs)
        next_obs = self.to_device(batch.next_obs)
        actions = self.to_device(batch.actions)
        returns = self.to_device(batch.returns)
        discounts = self.to_device(batch.discounts)
        weights = self.to_device(batch.weights)
        if self.augmentation is not None:  # (s and s' each with draws of their own, as DrQ)
            obs, next_obs = self.augmentation(obs), self.augmentation(next_obs)
        for layer in self.online_noise + self.target_noise:  # NoisyNet: new noise for every update, per network
            layer.reset_noise()
        loss, q, priorities = self.losses(obs, actions, returns, next_obs, discounts, weights)
        grad_norm = gradient_step(self.optimizer, self.params, loss, self.max_grad_norm)
        self.target_is_online = self.shared_target
        return UpdateInfo(float(loss.detach()), q.detach(), priorities.detach(), grad_norm, self.loss_name)

    def _losses(self, obs, actions, returns, next_obs, discounts, weights):
        """The batch's (importance-weighted) mean loss, Q(s, a) (B,) and the PER priorities (B,)."""
        if isinstance(self.q_network, DistributionalQNetwork):
            elementwise, q, priorities = self._c51_loss(obs, actions, returns, next_obs, discounts)
        elif isinstance(self.q_network, QuantileQNetwork):
            elementwise, q, priorities = self._qr_loss(obs, actions, returns, next_obs, discounts)
        else:
            with torch.no_grad():  # s' needs no gradient: keep it out of the backward pass
                if self.target_is_online and not self.online_noise:  # Q' = Q: one pass, the same y
                    y = td_target(returns, discounts, self.q_network(next_obs))
                else:
                    next_q_target = self.target_network(next_obs)
                    next_q_online = self.q_network(next_obs) if self.double_q else None
                    y = td_target(returns, discounts, next_q_target, next_q_online)
            q = self.q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
            if self.loss == "huber":
                elementwise = F.smooth_l1_loss(q, y, reduction="none")
            else:
                elementwise = F.mse_loss(q, y, reduction="none")
            priorities = y - q.detach()
        return (weights * elementwise).mean(), q, priorities

    def _qr_loss(self, obs, actions, returns, next_obs, discounts):
        """The quantile Huber loss of theta(s, a) against r + discount * theta'(s', a*) (B,), Q(s, a) (B,),
        and the loss itself as PER priority. Under double Q the online mean picks a*."""
        net, target_net = self.q_network, self.target_network
        rows = torch.arange(obs.shape[0], device=obs.device)
        with torch.no_grad():
            next_theta = target_net.quantile_values(next_obs)  # (B, A, N)
            next_q = net(next_obs) if self.double_q else next_theta.mean(dim=-1)
            target = returns[:, None] + discounts[:, None] * next_theta[rows, next_q.argmax(dim=1)]
        theta = net.quantile_values(obs)[rows, actions]  # (B, N)
        loss = quantile_huber_loss(theta, target, net.taus)
        return loss, theta.detach().mean(dim=1), loss.detach()

    def _c51_loss(self, obs, actions, returns, next_obs, discounts):
        """Cross-entropy of Z(s, a) against the projected target (B,), Q(s, a) (B,), and the per-sample
        KL divergence as PER priority (Hessel et al. 2018). Under double Q the online network's mean
        Q picks a*, the target network's distribution values it."""
        net, target_net = self.q_network, self.target_network
        rows = torch.arange(obs.shape[0], device=obs.device)
        with torch.no_grad():
            next_log_p = target_net.log_probs(next_obs)  # (B, A, N)
            if self.double_q:
                next_q = net(next_obs)  # (B, A)
            else:  # the target network's own mean Q, from the distribution already computed
                next_q = target_net.mean(next_log_p)
            next_probs = next_log_p[rows, next_q.argmax(dim=1)].exp()
            m = categorical_projection(next_probs, returns, discounts, net.support)
        log_p = net.log_probs(obs)[rows, actions]  # (B, N)
        cross_entropy = -(m * log_p).sum(dim=1)
        with torch.no_grad():
            kl = cross_entropy - (-(m * torch.log(m.clamp_min(1e-12))).sum(dim=1))  # CE - H(m) >= 0
            q = net.mean(log_p)
        return cross_entropy, q, kl

    @torch.no_grad()
    def update_target(self, tau: float, times: int = 1) -> None:
        """target <- tau * online + (1 - tau) * target, ``times`` times over (one update per
        target period that passed: a vector step of many envs can pass several), done at once
        as one update with ``1 - (1 - tau)**times``; tau = 1 is the hard copy."""
        tau = 1.0 - (1.0 - tau) ** times
        if tau >= 1.0:
            for t, o in zip(self.sync_target, self.sync_online):
                t.copy_(o)
            self.target_is_online = True
        else:
            for t, o in zip(*self.sync_float):
                t.lerp_(o, tau)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "target_network": self.target_network.state_dict(),
            **({"augmentation": self.augmentation.state_dict()} if self.augmentation is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if not self.shared_target:  # (a shared target's saved weights are the online network's)
            self.target_network.load_state_dict(state["target_network"])
        if self.augmentation is not None and "augmentation" in state:
            self.augmentation.load_state_dict(state["augmentation"])
        self.target_is_online = self.shared_target  # (else a copy may have been due: the target is used as saved)
