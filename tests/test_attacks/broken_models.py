"""Deliberately broken tiny models whose robust accuracy a gradient attack
overestimates (Athalye, Carlini, Wagner 2018): the trust report
(:func:`mmseg_robust.attacks.trust_checks`) must flag each of them. Each
wraps an honest model, so its predictions are the honest model's (up to
the quantisation or the noise) and only its gradients are broken."""
import torch
import torch.nn as nn


class Shattered(nn.Module):
    """Input quantisation: ``round(x * levels) / levels`` before the honest
    net. ``torch.round`` has a zero gradient everywhere, so the input
    gradient is exactly zero (shattered gradients)."""

    def __init__(self, net: nn.Module, levels: int = 8):
        super().__init__()
        self.net = net
        self.levels = levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class Stochastic(nn.Module):
    """Random input transformations at test time: a random shift of up to
    ``shift`` pixels (circular) and Gaussian noise of ``sigma``, drawn anew
    at every call (stochastic gradients)."""

    def __init__(self, net: nn.Module, sigma: float = 0.05, shift: int = 1):
        super().__init__()
        self.net = net
        self.sigma = sigma
        self.shift = shift

    def forward(self, x):
        dx, dy = (
            int(v) for v in torch.randint(-self.shift, self.shift + 1, (2, )))
        z = torch.roll(x, (dy, dx), (2, 3))
        z = (z + self.sigma * torch.randn_like(z)).clamp(0, 1)
        return torch.roll(self.net(z), (-dy, -dx), (2, 3))


class Vanishing(nn.Module):
    """Logits scaled by ``scale``: the same predictions, but the softmax
    saturates in float32 (every other class's probability underflows to
    0), so the losses' gradients vanish on confidently correct pixels."""

    def __init__(self, net: nn.Module, scale: float = 1e4):
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale
