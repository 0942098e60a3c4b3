"""The tiny models of the tests, and the images and batches they run on.

One place for them: ``PixelNet`` and ``SmallSegNet`` (plain conv nets on
toy images), the deliberately broken wrappers the trust report must flag
(``Shattered``, ``Stochastic``, ``Vanishing``), and dataloader-style
batches for the segmentor tests (``make_batch``). Reference implementations
and data stay in their own modules: ``tests/apgd_reference.py``,
``tests/pir_at_reference.py``, ``tests/pir_at_data.py`` and
``tests/test_models/segmentor_families.py``.
"""
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_robust.testing import _toy_sample


# -- small conv nets on toy images -------------------------------------------
class PixelNet(nn.Module):
    """A small conv net mapping (B, 3, H, W) in [0, 1] to (B, K, H, W)."""

    def __init__(self, num_classes=3, width=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.Tanh(),
            nn.Conv2d(width, width, 3, padding=1), nn.Tanh(),
            nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        return self.net(x * 4 - 2)


def toy_batch(B=3, H=12, W=12, seed=0, model=None, ignore_some=True):
    """Images and labels; with ``model`` the labels are its clean
    predictions (so the clean accuracy is 1) with some noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, H, W, generator=g)
    if model is not None:
        with torch.no_grad():
            y = model(x).argmax(1)
    else:
        y = torch.randint(0, 3, (B, H, W), generator=g)
    if ignore_some:
        y[0, :2, :] = 255
    return x, y


class SmallSegNet(nn.Module):
    """Three conv layers for the toy dataset's 3 classes (24 x 24 images)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(16, 3, 1))

    def forward(self, x):
        return self.body((x - 0.45) / 0.25)


def toy_seg_data(n, seed):
    """``n`` toy images ``(n, 3, 24, 24)`` in [0, 1] and their labels."""
    rng = np.random.default_rng(seed)
    imgs, labels = zip(*[_toy_sample(rng, (24, 24)) for _ in range(n)])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(labels)).long()


def train_small_segnet(n_train, n_iter, n_test):
    """A :class:`SmallSegNet` trained with Adam on ``n_train`` toy images
    (seed 0) for ``n_iter`` steps of 16, in eval mode, and ``n_test`` test
    images (seed 1): ``(model, x_test, y_test)``."""
    torch.manual_seed(0)
    model = SmallSegNet()
    x, y = toy_seg_data(n_train, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(n_iter):
        idx = torch.randint(0, len(x), (16, ))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_test, y_test = toy_seg_data(n_test, seed=1)
    return model.eval(), x_test, y_test


# -- deliberately broken models ----------------------------------------------
# Tiny models whose robust accuracy a gradient attack overestimates (Athalye,
# Carlini, Wagner 2018): the trust report
# (:func:`mmseg_robust.attacks.trust_checks`) must flag each of them. Each
# wraps an honest model, so its predictions are the honest model's (up to the
# quantisation or the noise) and only its gradients are broken.
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


# -- dataloader-style batches for the adapter tests and the family sweep ----
def make_batch(n: int,
               size: Tuple[int, int],
               label_size: Optional[Tuple[int, int]] = None,
               flips: Optional[Tuple[bool, ...]] = None,
               seed: int = 0,
               num_classes: int = 4,
               edges: bool = False,
               ignore: bool = True) -> dict:
    """A dataloader-style batch as MMSeg's pipelines pack it.

    Args:
        n (int): Images.
        size (tuple): ``(h, w)`` of the images (after the pipeline's resize).
        label_size (tuple, optional): ``(h, w)`` of the labels, also the
            ``ori_shape`` (test pipelines load labels at the original size).
        flips (tuple, optional): Per image, whether the pipeline flipped it
            horizontally (``flip`` metainfo).
        seed (int): Seed of the images and labels.
        num_classes (int): Labels are drawn from ``range(num_classes)``, a
            few pixels are 255 (ignored).
        edges (bool): Add ``gt_edge_map`` (PIDNet's training needs it).
        ignore (bool): Mark a few label pixels 255 (ignored).

    Returns:
        dict: ``dict(inputs=[uint8 (3, h, w)], data_samples=[SegDataSample])``.
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    label_size = tuple(label_size or size)
    flips = flips or (False, ) * n
    inputs, samples = [], []
    for i in range(n):
        # smooth images: a low-resolution pattern upsampled, plus noise
        low = torch.rand((1, 3, 4, 4), generator=g) * 255
        img = F.interpolate(
            low, size=size, mode='bilinear', align_corners=False)[0]
        img = img + torch.randn(img.shape, generator=g) * 10
        inputs.append(img.clamp(0, 255).round().to(torch.uint8))
        label = torch.randint(0, num_classes, (1, ) + label_size, generator=g)
        if ignore:
            label[:, :2, :3] = 255
        s = SegDataSample()
        s.set_metainfo(
            dict(
                img_path=f'img_{i}.png',
                ori_shape=label_size,
                img_shape=tuple(size),
                scale_factor=(size[1] / label_size[1],
                              size[0] / label_size[0]),
                flip=bool(flips[i]),
                flip_direction='horizontal' if flips[i] else None))
        s.gt_sem_seg = PixelData(data=label)
        if edges:
            s.gt_edge_map = PixelData(
                data=(label != torch.roll(label, 1, -1)).long())
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def correct_pixels(model, x, y, ignore=255):
    """``(B,)`` correct valid pixels of ``model``'s predictions."""
    with torch.no_grad():
        return ((model(x).argmax(1) == y) & (y != ignore)).flatten(1).sum(1)
