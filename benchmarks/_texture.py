"""A harder benchmark task than the demo's: many textured classes.

Images are mosaics of Voronoi regions, each filled with one of 12 textures
(gratings of four orientations and two frequencies, two checkerboards, dots,
smooth blobs) drawn in two random grey-ish colours shared by all classes, plus
noise and per-image contrast jitter. A single pixel's colour says nothing
about its class: the model needs context, like real segmentation. Region
boundaries are labelled 255 (ignored), as PASCAL-VOC's are.

The model is a small U-Net in plain PyTorch (inputs in [0, 1]), trained in
a minute or two on the CPU, clean or with PGD adversarial training
(``mmseg_robust.attacks.pgd_train``, as ``AdvTrainingHook`` does). Trained
weights are cached under ``work_dirs/bench/`` (never committed).
"""
import math
import os
import os.path as osp
import time
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

NUM_CLASSES = 12
SIZE = 64


def _texture(kind: int, h: int, w: int, g: torch.Generator) -> Tensor:
    """A ``(h, w)`` pattern in [0, 1] of texture ``kind`` (random phase)."""
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32),
        torch.arange(w, dtype=torch.float32),
        indexing='ij')
    phase = float(torch.rand(1, generator=g)) * 2 * math.pi
    if kind < 8:  # gratings: 4 orientations x 2 periods
        theta = (kind % 4) * math.pi / 4
        period = 4.0 if kind < 4 else 8.0
        u = xx * math.cos(theta) + yy * math.sin(theta)
        return 0.5 + 0.5 * torch.sin(2 * math.pi * u / period + phase)
    if kind < 10:  # checkerboards of two sizes
        s = 2 if kind == 8 else 5
        off = int(torch.randint(0, s, (1, ), generator=g))
        return (((yy + off) // s + (xx + off) // s) % 2).float()
    if kind == 10:  # sparse dots
        return (torch.rand(h, w, generator=g) < 0.15).float()
    # smooth blobs: upsampled noise
    coarse = torch.rand(1, 1, h // 8 + 1, w // 8 + 1, generator=g)
    return F.interpolate(
        coarse, size=(h, w), mode='bilinear', align_corners=False)[0, 0]


def make_image(seed: int, size: int = SIZE) -> Tuple[Tensor, Tensor]:
    """One image ``(3, size, size)`` in [0, 1] and its labels."""
    g = torch.Generator().manual_seed(seed)
    n_regions = int(torch.randint(3, 7, (1, ), generator=g))
    centres = torch.rand(n_regions, 2, generator=g) * size
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing='ij')
    d = ((yy[None] - centres[:, 0, None, None])**2 +
         (xx[None] - centres[:, 1, None, None])**2)
    region = d.argmin(0)
    classes = torch.randint(0, NUM_CLASSES, (n_regions, ), generator=g)
    label = classes[region]
    # two colours shared by every class of the image
    c0 = 0.3 + 0.2 * torch.rand(3, generator=g)
    c1 = c0 + (0.15 + 0.2 * torch.rand(3, generator=g))
    img = torch.zeros(3, size, size)
    for r in range(n_regions):
        t = _texture(int(classes[r]), size, size, g)
        m = region == r
        img[:, m] = c0[:, None] + (c1 - c0)[:, None] * t[m][None]
    img = img + 0.04 * torch.randn(3, size, size, generator=g)
    contrast = 0.8 + 0.4 * float(torch.rand(1, generator=g))
    img = ((img - 0.5) * contrast + 0.5).clamp(0, 1)
    # boundaries (a pixel whose 4-neighbourhood crosses regions) ignored
    pad = F.pad(region[None, None].float(), (1, 1, 1, 1), mode='replicate')
    nb = torch.stack([
        pad[0, 0, :-2, 1:-1], pad[0, 0, 2:, 1:-1], pad[0, 0, 1:-1, :-2],
        pad[0, 0, 1:-1, 2:]
    ])
    boundary = (nb != region.float()[None]).any(0)
    label = label.masked_fill(boundary, 255)
    return img, label


def make_split(first_seed: int,
               n: int,
               size: int = SIZE) -> Tuple[Tensor, Tensor]:
    imgs, labels = zip(*(make_image(first_seed + i, size) for i in range(n)))
    return torch.stack(imgs), torch.stack(labels)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """A small U-Net: three scales, 8-16-32 channels (about 30 k
    parameters); inputs ``(B, 3, H, W)`` in [0, 1], logits at input
    resolution."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3,
                                                 w), _block(w, 2 * w), _block(
                                                     2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - 0.5) / 0.25
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def train_pool(cache_dir: str, n: int = 512) -> Tuple[Tensor, Tensor]:
    """The training images (seeds disjoint from validation), generated once
    and cached."""
    path = osp.join(cache_dir, f'texture_train_{n}.pt')
    if osp.isfile(path):
        data = torch.load(path, weights_only=True)
        return data['x'], data['y']
    x, y = make_split(10**6, n)
    os.makedirs(cache_dir, exist_ok=True)
    torch.save(dict(x=x, y=y), path)
    return x, y


def train_unet(pool: Tuple[Tensor, Tensor],
               at_steps: int = 0,
               iters: int = 1500,
               batch_size: int = 16,
               eps: float = 4 / 255,
               seed: int = 0,
               width: int = 8,
               log=print) -> UNet:
    """Train a U-Net on the training pool; ``at_steps > 0`` trains on PGD
    AT^k adversarial batches (random start, step 2.5 eps / k)."""
    from mmseg_robust.attacks import pgd_train
    torch.manual_seed(seed)
    pool_x, pool_y = pool
    model = UNet(width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=iters, pct_start=0.1)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for it in range(iters):
        idx = torch.randint(0, len(pool_x), (batch_size, ), generator=g)
        x, y = pool_x[idx], pool_y[idx]
        if at_steps:
            model.eval()
            x, _ = pgd_train(model, x, y, eps, at_steps, start=it)
        model.train()
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % 250 == 0:
            log(f'  [U-Net AT^{at_steps}] iter {it + 1}/{iters} loss '
                f'{loss.item():.3f} ({time.perf_counter() - t0:.0f} s)')
    return model.eval()


#: The texture models: training settings of :func:`train_unet`. The
#: ``texture_heldout_*`` models were trained only after SEA's recommended
#: preset had been chosen on the others (docs/attacks.md, "Presets"): a
#: wider clean U-Net and one adversarially trained at a larger radius with
#: more steps, other seeds.
TEXTURE_MODELS = {
    'texture_clean': dict(at_steps=0),
    'texture_at': dict(at_steps=2),
    'texture_heldout_clean': dict(at_steps=0, width=16, seed=1),
    'texture_heldout_at': dict(at_steps=3, eps=6 / 255, seed=2),
}


def texture_model(name: str, cache_dir: str, log=print) -> UNet:
    """One of :data:`TEXTURE_MODELS` (``'texture_clean'``, ``'texture_at'``:
    AT^2 at 4/255, ...), trained once and cached as
    ``<cache_dir>/<name>.pth`` (weights only)."""
    settings = TEXTURE_MODELS[name]
    path = osp.join(cache_dir, f'{name}.pth')
    model = UNet(width=settings.get('width', 8))
    if osp.isfile(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log(f'training {name} (cached in {path}) ...')
    model = train_unet(train_pool(cache_dir), log=log, **settings)
    os.makedirs(cache_dir, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def texture_val(n: int = 16) -> Tuple[Tensor, Tensor]:
    """The validation images (seeds disjoint from training)."""
    return make_split(0, n)
