"""DrQ's image augmentation of sampled batches (Kostrikov et al. 2020, "Image Augmentation Is
All You Need"; Yarats et al. 2021, DrQ-v2's random shifts), as Dopamine's Atari 100k agents use
it: a random shift of every sample by up to ``pad`` pixels (edge padding, then a random crop back
to the frame's size) and intensity noise, scaling every sample by 1 + scale * clip(N(0, 1), -2, 2)
(Schwarzer et al. 2021, SPR).

Both are batched tensor ops (no Python loop over samples) on the batch's device, drawn from a
``torch.Generator`` of the run's own, so a run replays its augmentations and a resumed run
continues the same stream.
"""

from __future__ import annotations

import torch

_PACKED = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # a pixel's channels as one word


def random_shift(obs: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """``obs`` (B, ..., H, W), any dtype, shifted per sample by (dy, dx) in [-pad, pad]², every
    channel and stacked frame of a sample alike; pixels shifted in from outside repeat the edge.

    Edge-padding by ``pad`` and cropping at offset o in [0, 2 pad] reads source pixel
    clamp(i + o - pad, 0, H - 1): that index is gathered directly, without the padded copy.
    Where a pixel's channels fit one machine word (4 stacked uint8 frames: an int32) they move
    as one, in channels_last order (B, H, W, C), the layout the CNN reads.
    Returns a new tensor of ``obs``'s shape and dtype; ``obs`` is left as it is.
    """
    if pad == 0:
        return obs
    B, H, W = obs.shape[0], obs.shape[-2], obs.shape[-1]
    device = obs.device
    shift = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator, device=generator.device).to(device) - pad
    rows = (torch.arange(H, device=device) + shift[:, :1]).clamp_(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=device) + shift[:, 1:]).clamp_(0, W - 1)  # (B, W)
    flat = obs.reshape(B, -1, H, W)
    C = flat.shape[1]
    word = _PACKED.get(C * obs.element_size())
    if word is not None and obs.dim() == 4:
        pixels = (rows[:, :, None] * W + cols[:, None, :]).view(B, H * W)  # source pixel of each output pixel
        packed = flat.permute(0, 2, 3, 1).contiguous().view(word).view(B, H * W)
        out = packed.gather(1, pixels).view(B, H, W, 1).view(obs.dtype)  # (B, H, W, C)
        return out.permute(0, 3, 1, 2)  # (B, C, H, W) in channels_last memory order
    out = flat.gather(2, rows[:, None, :, None].expand(B, C, H, W))
    out = out.gather(3, cols[:, None, None, :].expand(B, C, H, W))
    return out.reshape(obs.shape)


def intensity(obs: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """float32 ``obs * (1 + scale * clip(z, -2, 2))``, one z ~ N(0, 1) per sample (B, ...)."""
    shape = (obs.shape[0],) + (1,) * (obs.dim() - 1)
    z = torch.randn(shape, generator=generator, device=generator.device).to(obs.device)
    # one pass: uint8 frames promote to float32 inside the product (the same values as .float() first)
    return torch.mul(obs, 1.0 + scale * z.clamp_(-2.0, 2.0))


class Augmentation:
    """``network.augment``: shift, then intensity noise, on each batch of observations.

    Args:
        pad: the shift's range in pixels (0: no shift).
        scale: the intensity noise's scale (0: none; the output stays in ``obs``'s dtype).
        seed: seeds the generator (on ``device``) that every draw comes from.
    """

    def __init__(self, pad: int, scale: float, seed: int, device: torch.device):
        self.pad, self.scale = pad, scale
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, ..., H, W) uint8 frames -> the augmented batch: float32 with intensity noise, else
        ``obs``'s dtype. The network scales either the same way (it divides by 255)."""
        obs = random_shift(obs, self.pad, self.generator)
        return intensity(obs, self.scale, self.generator) if self.scale > 0 else obs

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
