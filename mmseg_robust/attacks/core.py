"""Shared machinery of the attacks: input checks, projection, random starts,
model evaluation with input gradients, and the result type.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
import math
import time
import warnings
from contextlib import nullcontext
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .losses import (PIXEL_LOSSES, PixelTerms, argmax_classes,
                     check_logits_labels, check_loss_name)

__all__ = ['AttackResult', 'check_eps', 'Objective', 'Evaluation',
           'start_noise', 'derive_seed', 'SeedLike', 'apgd_checkpoints',
           'TRACKED_DEFAULTS', 'default_tracked']

SeedLike = Union[int, Sequence[int]]
Model = Callable[[Tensor], Tensor]


def check_eps(eps: float, name: str = 'eps') -> float:
    """Validate an l_inf radius given as a fraction of the [0, 1] range."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be a number such as 8/255, '
                        f'got {eps!r}') from None
    if math.isnan(value) or value < 0 or value > 1:
        raise ValueError(
            f'{name}={eps!r} is not a valid l_inf radius: it must be in '
            f'[0, 1] as a fraction of the pixel range, e.g. {name}=8/255 '
            f'(= {8 / 255:.4f}). On the command line radii are given in '
            'units of 1/255 (--eps 8).')
    return value


def check_n_iter(n_iter: int, minimum: int = 1, what: str = 'n_iter') -> int:
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < minimum:
        raise ValueError(f'{what} must be an integer >= {minimum}, '
                         f'got {n_iter!r}')
    return int(n_iter)


def check_images(x: Tensor, y: Tensor,
                 mask: Optional[Tensor] = None) -> Optional[Tensor]:
    """Check images ``x`` (B, C, H, W) in [0, 1] and labels ``y`` (B, H', W').

    Returns the perturbation mask broadcast to ``(B, 1, H, W)`` bool, or
    ``None``.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError('x must be a (B, C, H, W) tensor, got '
                         f'{getattr(x, "shape", type(x))}')
    if not x.dtype.is_floating_point:
        raise TypeError(f'x must be a float tensor in [0, 1], got {x.dtype}; '
                        'convert uint8 images with x.float() / 255')
    if not isinstance(y, Tensor) or y.dim() != 3 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f'y must be a (B, H, W) label tensor with B={x.shape[0]} like x, '
            f'got {tuple(getattr(y, "shape", ()))}')
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f'y must be an integer tensor, got {y.dtype}')
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0
                      or x.max() > 1):
        raise ValueError(
            f'x must hold finite values in [0, 1], got range '
            f'[{x.min().item():.4g}, {x.max().item():.4g}]. Images in '
            '[0, 255] must be divided by 255 first.')
    if mask is None:
        return None
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    try:
        mask = mask.expand(x.shape[0], 1, *x.shape[2:])
    except RuntimeError:
        raise ValueError(f'mask of shape {tuple(mask.shape)} does not fit '
                         f'images of shape {tuple(x.shape)}') from None
    return mask


def warn_if_training(model: Model) -> None:
    """AutoAttack-style warning for a model left in training mode."""
    if getattr(model, 'training', False):
        warnings.warn(
            'the attacked model is in training mode: dropout, drop-path and '
            'BatchNorm make its outputs stochastic and the attack unreliable.'
            ' Call model.eval() first.',
            stacklevel=3)


def apgd_checkpoints(n_iter: int) -> Sequence[int]:
    """APGD checkpoints ``w_j = ceil(p_j * n_iter)`` (SPEC section 3).

    ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
    computed in integer hundredths so that no rounding error moves a
    checkpoint.
    """
    points = []
    prev, cur = 0, 22
    while cur <= 100:
        w = -(-cur * n_iter // 100)  # ceil
        if w >= 1 and (not points or w > points[-1]):
            points.append(w)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return tuple(points)


def derive_seed(seed: SeedLike, tag: str) -> SeedLike:
    """A seed for ``tag`` (e.g. an attack's name) derived from ``seed``.

    Each attack of an ensemble draws its own random start (SPEC section 5):
    its seed is a hash of the image's seed and the attack's name, so it does
    not depend on the other attacks, their order or the batch composition.
    One seed per image stays one seed per image.
    """
    if isinstance(seed, int):
        return zlib.crc32(f'{seed}:{tag}'.encode())
    return [zlib.crc32(f'{int(s)}:{tag}'.encode()) for s in seed]


def start_noise(x: Tensor, seed: SeedLike) -> Tensor:
    """Uniform noise in [-1, 1] of ``x``'s shape, reproducible per image.

    With an ``int`` seed one CPU generator fills the batch, so image ``i``
    always gets the same noise for the same ``(seed, i, shape)``. With one
    seed per image each image gets its own generator, which makes its noise
    independent of batch composition (used for resumable and distributed
    evaluation). Drawn on the CPU so that CPU and GPU runs start alike.
    """
    if isinstance(seed, int):
        gen = torch.Generator().manual_seed(seed)
        noise = torch.rand(x.shape, generator=gen, dtype=torch.float32)
    else:
        seeds = list(seed)
        if len(seeds) != x.shape[0]:
            raise ValueError(f'got {len(seeds)} seeds for a batch of '
                             f'{x.shape[0]} images')
        noise = torch.stack([
            torch.rand(
                x.shape[1:],
                generator=torch.Generator().manual_seed(int(s)),
                dtype=torch.float32) for s in seeds
        ])
    return noise.mul_(2).sub_(1).to(device=x.device, dtype=x.dtype)


def take_rows(t: Optional[Tensor], idx: Tensor) -> Optional[Tensor]:
    """``t[idx]`` for batch positions ``idx`` (a sorted subset of the batch,
    as the attacks use them), without the copy when ``idx`` is the whole
    batch; ``None`` stays ``None``."""
    if t is None or idx.numel() == t.shape[0]:
        return t
    return t[idx]


def subset_model(model: Model, idx: Optional[Tensor]) -> Model:
    """The model restricted to images ``idx`` of the batch.

    Plain models act per image and are returned as they are. Models whose
    behaviour depends on per-image metadata (the MMSeg adapter) implement
    ``subset(idx)``.
    """
    if idx is None or not hasattr(model, 'subset'):
        return model
    return model.subset(idx)


@dataclass
class AttackResult:
    """Output of one attack on a batch.

    Attributes:
        x_adv (Tensor): ``(B, C, H, W)`` adversarial images, inside the
            eps-ball around ``x`` and inside [0, 1].
        pred (Tensor): ``(B, H, W)`` predictions at ``x_adv``.
        correct (Tensor): ``(B,)`` number of valid pixels still correctly
            classified at ``x_adv`` (targeted: not yet of the target class).
        valid (Tensor): ``(B,)`` number of valid (not ignored) pixels.
        loss (Tensor): ``(B,)`` best attack objective reached.
        n_iter (Tensor): ``(B,)`` iterations run per image (early stopping).
        n_evals (int): forward+backward passes, counted per image.
        time (float): wall-clock seconds.
    """
    x_adv: Tensor
    pred: Tensor
    correct: Tensor
    valid: Tensor
    loss: Optional[Tensor] = None
    n_iter: Optional[Tensor] = None
    n_evals: int = 0
    time: float = 0.0
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def acc(self) -> Tensor:
        """Per-image pixel accuracy, NaN for images without valid pixels."""
        valid = self.valid.double()
        acc = self.correct.double() / valid.clamp_min(1)
        return torch.where(self.valid > 0, acc, torch.full_like(acc, math.nan))


#: The objective that drives APGD's step-size control and restart point for
#: each attacked loss (SPEC section 3): masked and balanced losses fall as
#: pixels flip, so their own value would reset images to points with fewer
#: flipped pixels; the authors track the pixel-averaged CE instead. The
#: masked spherical loss is stronger tracking itself. Measured in
#: docs/benchmarks.md.
TRACKED_DEFAULTS: Dict[str, str] = {
    'ce': 'ce',
    'bal_ce': 'ce',
    'cossim_ce': 'ce',
    'mask_ce': 'ce',
    'js': 'ce',
    'mask_sph': 'mask_sph',
    'mask_ce_bal': 'ce',
}


def default_tracked(loss: str) -> str:
    """The tracked objective APGD uses by default when attacking ``loss``."""
    return TRACKED_DEFAULTS[check_loss_name(loss)]


class Evaluation(NamedTuple):
    """One evaluation of the attack objective on a set of images.

    Attributes:
        loss (Tensor): ``(b,)`` attacked objective (mean over all pixels).
        tracked (Tensor): ``(b,)`` tracked objective (SPEC section 3); the
            same tensor as ``loss`` when the attack tracks its own loss.
        grad (Tensor | None): Gradient of ``loss`` w.r.t. the images.
        pred (Tensor): ``(b, H, W)`` predictions.
        correct (Tensor): ``(b,)`` correct valid pixels.
    """
    loss: Tensor
    tracked: Tensor
    grad: Optional[Tensor]
    pred: Tensor
    correct: Tensor


class Objective:
    """Evaluates the attack objective, predictions and input gradients.

    Args:
        model: Callable ``x -> logits`` at label resolution.
        y (Tensor): ``(B, H, W)`` labels (targeted: target labels).
        loss (str): Name in :data:`~.losses.PIXEL_LOSSES`.
        ignore_index (int): Ignored label.
        targeted (bool): Minimise CE to ``y`` instead of maximising ``loss``.
        amp (bool | torch.dtype): Autocast the model call (``True`` means
            bfloat16 on CPU, float16 on CUDA). Bookkeeping stays float32.
        class_weights (Tensor, optional): For ``mask_ce_bal``.
        track (str, optional): Loss whose pixel mean is the tracked
            objective; ``None`` tracks ``loss`` itself. Targeted attacks
            always track their own objective.
    """

    def __init__(self,
                 model: Model,
                 y: Tensor,
                 loss: str = 'ce',
                 ignore_index: int = 255,
                 targeted: bool = False,
                 amp: Union[bool, torch.dtype] = False,
                 class_weights: Optional[Tensor] = None,
                 track: Optional[str] = None):
        self.model = model
        self.y = y.long()
        self.loss_name = check_loss_name(loss)
        if targeted and loss != 'ce':
            raise ValueError("targeted attacks minimise the CE to the target "
                             f"labels: use loss='ce', got {loss!r}")
        self.loss_fn = PIXEL_LOSSES[loss]
        if track is not None:
            check_loss_name(track)
        self.track_name = None if (targeted or track == loss) else track
        self.ignore_index = ignore_index
        self.targeted = targeted
        self.amp = amp
        self.class_weights = class_weights
        self.valid = (self.y != ignore_index)
        self.n_valid = self.valid.flatten(1).sum(1)
        self.n_evals = 0
        self._checked = False
        self._warned_zero_grad = False

    def _autocast(self, device: torch.device):
        if not self.amp:
            return nullcontext()
        dtype = self.amp if isinstance(self.amp, torch.dtype) else (
            torch.float16 if device.type == 'cuda' else torch.bfloat16)
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _check_logits(self, logits: Tensor, y: Tensor, idx: Tensor) -> None:
        if not self._checked:
            check_logits_labels(logits, y, self.ignore_index)
            self._checked = True
        finite = torch.isfinite(logits).flatten(1).all(1)
        if not bool(finite.all()):
            bad = idx[~finite].tolist()
            raise FloatingPointError(
                f'the model returned NaN or inf logits for batch position(s) '
                f'{bad}; check the model and its inputs (amp overflow?)')

    def _pred_correct(self, logits: Tensor, idx: Tensor, pred=None):
        if pred is None:
            pred = argmax_classes(logits.detach())
        y = take_rows(self.y, idx)
        hit = (pred != y) if self.targeted else (pred == y)
        correct = (hit & take_rows(self.valid, idx)).flatten(1).sum(1)
        return pred, correct

    @torch.no_grad()
    def predict(self, x: Tensor, idx: Tensor):
        """Predictions and correct-pixel counts of images ``idx`` (no loss,
        no gradient)."""
        with self._autocast(x.device):
            logits = subset_model(self.model, idx)(x)
        logits = logits.float()
        self._check_logits(logits, take_rows(self.y, idx), idx)
        self.n_evals += x.shape[0]
        return self._pred_correct(logits, idx)

    def evaluate(self,
                 x: Tensor,
                 idx: Tensor,
                 step: Optional[int] = None,
                 total_steps: Optional[int] = None,
                 need_grad: bool = True) -> Evaluation:
        """Evaluate images ``x`` that are batch positions ``idx``.

        The attacked loss and the tracked objective are computed from the
        same logits and share their terms (:class:`~.losses.PixelTerms`).

        Returns:
            Evaluation: per-image attacked and tracked objectives (means over
            all pixels of the loss maps), the gradient of the attacked one
            w.r.t. ``x`` (``None`` without ``need_grad``), predictions and
            correct-pixel counts.
        """
        y = take_rows(self.y, idx)
        model = subset_model(self.model, idx)
        x = x.detach().requires_grad_(need_grad)
        grad_ctx = torch.enable_grad() if need_grad else torch.no_grad()
        with grad_ctx:
            with self._autocast(x.device):
                logits = model(x)
            logits = logits.float()
            self._check_logits(logits, y, idx)
            pred = argmax_classes(logits.detach())
            terms = PixelTerms(logits, y, self.ignore_index, pred)
            kwargs = dict(
                ignore_index=self.ignore_index,
                step=step,
                total_steps=total_steps,
                class_weights=self.class_weights,
                pred=pred,
                terms=terms)
            if self.targeted:
                lmap = -PIXEL_LOSSES['ce'](logits, y, **kwargs)
            else:
                lmap = self.loss_fn(logits, y, **kwargs)
            loss = lmap.flatten(1).mean(1)
            grad = None
            if need_grad:
                # input gradient only: no weight gradients are computed
                grad, = torch.autograd.grad(loss.sum(), x)
        loss = loss.detach()
        tracked = loss
        if self.track_name is not None:
            with torch.no_grad():
                tracked = PIXEL_LOSSES[self.track_name](
                    logits, y, **kwargs).flatten(1).mean(1)
        self.n_evals += x.shape[0]
        pred, correct = self._pred_correct(logits, idx, pred)
        return Evaluation(loss, tracked, grad, pred, correct)

    def warn_zero_grad(self, grad: Tensor, correct: Tensor,
                       idx: Tensor) -> None:
        """Warn once if an image that is not broken has an all-zero gradient
        (possible gradient masking)."""
        if self._warned_zero_grad or grad is None:
            return
        zero = (grad.flatten(1).abs().amax(1) == 0) & (correct > 0)
        if bool(zero.any()):
            self._warned_zero_grad = True
            warnings.warn(
                f'the input gradient is zero everywhere for batch position(s) '
                f'{idx[zero].tolist()[:10]} (loss {self.loss_name!r}) although '
                'pixels are still correctly classified: possible gradient '
                'masking (non-differentiable preprocessing, saturated '
                'outputs, or integer casts). Robust accuracy may be '
                'overestimated.',
                stacklevel=4)


class Timer:
    """Tiny helper: ``with Timer() as t: ...; t.elapsed``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
        return False
