"""What the attacks share: result and start types, seeds, the objective
with its input gradients, and the one skeleton every attack runs
(validate -> clean prediction -> feasible box -> start point -> iterate ->
finish), each attack supplying only its step loop.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
import math
import time
import warnings
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .checks import check_eps, check_images, check_n_iter, warn_if_training
from .losses import (PIXEL_LOSSES, PixelTerms, argmax_classes,
                     check_logits_labels, check_loss_name)

__all__ = [
    'AttackResult', 'Prediction', 'Evaluation', 'Objective', 'UniformNoise',
    'StartLike', 'SeedLike', 'start_noise', 'derive_seed', 'TRACKED_DEFAULTS',
    'default_tracked', 'WorstCase', 'feasible_box', 'project', 'start_point',
    'AttackProblem', 'run_attack_loop', 'take_rows', 'subset_model', 'Timer'
]

SeedLike = Union[int, Sequence[int]]
Model = Callable[[Tensor], Tensor]


class Prediction(NamedTuple):
    """Predictions of a batch and their correct valid pixels.

    Attributes:
        pred (Tensor): ``(B, H, W)`` predicted classes.
        correct (Tensor): ``(B,)`` correctly classified valid pixels.
    """
    pred: Tensor
    correct: Tensor


class UniformNoise(NamedTuple):
    """A random start given as uniform noise in [-1, 1] of the images'
    shape: the attack starts at ``x + radius * noise`` (projected)."""
    noise: Tensor


#: Where an attack starts: ``None`` at the clean image; an ``int`` seed (one
#: generator for the batch) or one seed per image: uniformly at random in
#: the ball; a :class:`UniformNoise`; or a ``(B, C, H, W)`` tensor of
#: starting points (projected onto the ball).
StartLike = Union[None, int, Sequence[int], UniformNoise, Tensor]


def derive_seed(seed: SeedLike, tag: str) -> SeedLike:
    """A seed for ``tag`` (e.g. an attack's name) derived from ``seed``.

    Each attack of an ensemble draws its own random start (docs/attacks.md):
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
        loss (Tensor): ``(B,)`` best tracked objective reached (NaN for
            images that were not attacked).
        n_iter (Tensor): ``(B,)`` iterations run per image (early stopping;
            0 for images that were not attacked).
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
#: each attacked loss (docs/attacks.md): masked and balanced losses fall as
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
        tracked (Tensor): ``(b,)`` tracked objective (docs/attacks.md); the
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
        # one reduction per image instead of a bool map of every logit: a
        # NaN or inf logit makes its image's sum non-finite; the exact check
        # then runs on those images only (a finite sum that overflowed is
        # not an error)
        finite = torch.isfinite(logits.detach().flatten(1).sum(1))
        if not bool(finite.all()):
            suspect = (~finite).nonzero().flatten()
            finite[suspect] = torch.isfinite(
                logits.detach()[suspect]).flatten(1).all(1)
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
                f'{idx[zero].tolist()[:10]} (loss {self.loss_name!r}) '
                'although '
                'pixels are still correctly classified: possible gradient '
                'masking (non-differentiable preprocessing, saturated '
                'outputs, or integer casts). Robust accuracy may be '
                'overestimated.',
                stacklevel=4)


class WorstCase:
    """The lowest-accuracy point seen so far, per image: an APGD run's
    output and SEA's worst case over its attacks.

    Args:
        x, pred, correct: The starting worst case (points, predictions,
            correct-pixel counts).
        score (Tensor, optional): ``(B,)`` a score of these points that
            breaks ties in accuracy: with it, a point that is as bad as the
            worst case and scores higher replaces it (APGD passes its
            tracked objective). Without it ties keep the earlier point.
    """

    def __init__(self,
                 x: Tensor,
                 pred: Tensor,
                 correct: Tensor,
                 score: Optional[Tensor] = None):
        self.x = x.clone()
        self.pred = pred.clone()
        self.correct = correct.clone()
        self.score = None if score is None else score.clone()

    def update(self,
               idx: Tensor,
               x: Tensor,
               pred: Tensor,
               correct: Tensor,
               score: Optional[Tensor] = None) -> Tensor:
        """Keep the points of images ``idx`` that are better: fewer correct
        pixels or, if this worst case keeps scores, as few and a higher
        ``score``.

        Ties in accuracy happen (pixel counts plateau on robust models) and
        matter where a point is handed on: red-eps starts each radius from
        the previous one's output, and the higher-objective point is on
        average the better start (measured, docs/attacks.md, "Choices where
        the paper leaves room"). An image that stops early stops at its first
        all-wrong point, so scores never make the result depend on how long
        other images run.

        Returns:
            Tensor: bool mask over ``idx`` of the images that improved.
        """
        cur = self.correct[idx]
        better = correct < cur
        scored = self.score is not None and score is not None
        if scored:
            better |= (correct == cur) & (score > self.score[idx])
        if bool(better.any()):
            sel = idx[better]
            self.x[sel] = x[better]
            self.pred[sel] = pred[better]
            self.correct[sel] = correct[better]
            if scored:
                self.score[sel] = score[better]
        return better


def feasible_box(x: Tensor, eps: float,
                 mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Box of the l_inf ball around ``x`` intersected with [0, 1]; masked-out
    pixels (padding) are pinned to their value."""
    lower = (x - eps).clamp_(0.0, 1.0)
    upper = (x + eps).clamp_(0.0, 1.0)
    if mask is not None:
        lower = torch.where(mask, lower, x)
        upper = torch.where(mask, upper, x)
    return lower, upper


def project(z: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Projection onto the box ``[lower, upper]``."""
    return torch.maximum(torch.minimum(z, upper), lower)


def start_point(x: Tensor, radius: float, lower: Tensor, upper: Tensor,
                start: StartLike) -> Tensor:
    """The first iterate of a run at ``radius`` (see :data:`StartLike`),
    inside the box."""
    if start is None:
        return x.clone()
    if isinstance(start, Tensor):
        return project(start.detach().to(x), lower, upper)
    noise = start.noise if isinstance(start, UniformNoise) else start_noise(
        x, start)
    return project(x + radius * noise, lower, upper)


_LEGACY_START = ('seed', 'random_start', 'noise', 'x_init')


def start_from_legacy(start, legacy: dict, random_default: bool,
                      what: str) -> StartLike:
    """``start`` from the keyword arguments of earlier releases
    (``random_start``, ``seed``, ``noise``, ``x_init``), with a
    deprecation warning."""
    unknown = set(legacy) - set(_LEGACY_START)
    if unknown:
        raise TypeError(f'{what}() got unexpected keyword argument(s) '
                        f'{sorted(unknown)}')
    if not legacy:
        return start
    if start is not _DEFAULT:
        raise TypeError(f'{what}(): give start=, not also '
                        f'{"/".join(sorted(legacy))}')
    warnings.warn(
        f'{what}(): {", ".join(sorted(legacy))} are deprecated; use '
        "start= (a seed, None for the clean image, UniformNoise(noise) or "
        'starting points)',
        DeprecationWarning,
        stacklevel=3)
    if legacy.get('x_init') is not None:
        return legacy['x_init']
    if not legacy.get('random_start', random_default):
        return None
    if legacy.get('noise') is not None:
        return UniformNoise(legacy['noise'])
    return legacy.get('seed', 0)


class _Default:

    def __repr__(self):
        return 'default'


#: marks an argument left at its default (``start`` of the attacks)
_DEFAULT = _Default()


@dataclass
class AttackProblem:
    """A validated attack problem on a batch: what every attack needs
    before its step loop.

    Attributes:
        obj (Objective): Loss, tracked objective, predictions, gradients.
        x (Tensor): ``(B, C, H, W)`` clean images (float32, detached).
        eps (float): The radius.
        n_iter (int): Iterations.
        mask (Tensor | None): ``(B, 1, H, W)`` pixels that may change.
        start (StartLike): Where the (first) run starts.
        early_stop (bool): Stop an image once no valid pixel is correct.
        clean (Prediction | None): Clean predictions (set by
            :func:`run_attack_loop`).
        active (Tensor | None): ``(B,)`` images to attack.
    """
    obj: 'Objective'
    x: Tensor
    eps: float
    n_iter: int
    mask: Optional[Tensor]
    start: StartLike
    early_stop: bool = True
    clean: Optional[Prediction] = None
    active: Optional[Tensor] = None

    @classmethod
    def create(cls,
               model: Model,
               x: Tensor,
               y: Tensor,
               eps: float,
               n_iter: int,
               loss: str,
               start: StartLike = None,
               ignore_index: int = 255,
               mask: Optional[Tensor] = None,
               amp: Union[bool, torch.dtype] = False,
               targeted: bool = False,
               class_weights: Optional[Tensor] = None,
               early_stop: bool = True,
               track: Optional[str] = None,
               check_iter: bool = True,
               validate: bool = True) -> 'AttackProblem':
        """Check the inputs (unless ``validate=False``: callers such as
        :class:`~.sea.SEA` check once for all their attacks;
        ``check_iter=False``: the attack checked ``n_iter`` itself) and
        build the objective."""
        if validate:
            warn_if_training(model)
            eps = check_eps(eps)
            if check_iter:
                n_iter = check_n_iter(n_iter)
            mask = check_images(x, y, mask)
            if track is not None:
                check_loss_name(track)
        x = x.detach().float()
        obj = Objective(
            model,
            y.to(x.device),
            loss=loss,
            ignore_index=ignore_index,
            targeted=targeted,
            amp=amp,
            class_weights=class_weights,
            track=track)
        return cls(obj, x, float(eps), int(n_iter), mask, start, early_stop)

    def box(self, radius: float) -> Tuple[Tensor, Tensor]:
        """The feasible box at ``radius``."""
        return feasible_box(self.x, radius, self.mask)

    def start_point(self,
                    radius: float,
                    lower: Tensor,
                    upper: Tensor,
                    start: StartLike = _DEFAULT) -> Tensor:
        """The first iterate at ``radius`` (default: the problem's
        start)."""
        return start_point(self.x, radius, lower, upper,
                           self.start if start is _DEFAULT else start)

    def fallback(self) -> WorstCase:
        """The clean images as the worst case so far."""
        return WorstCase(self.x, self.clean.pred, self.clean.correct)


#: An attack's step loop: ``steps(problem) -> (worst case, best tracked
#: objective (B,), iterations (B,))``, called when there is something to do.
StepLoop = Callable[[AttackProblem], Tuple[WorstCase, Tensor, Tensor]]


def run_attack_loop(steps: StepLoop,
                    problem: AttackProblem,
                    clean: Optional[Prediction] = None) -> 'AttackResult':
    """The skeleton of every attack: clean prediction, the images to
    attack, the attack's step loop, the result.

    The result is, per image, the step loop's lowest-accuracy point unless
    the clean image is strictly better, so an attack never reports more than
    the clean accuracy.
    """
    with Timer() as timer:
        obj, x = problem.obj, problem.x
        if clean is None:
            clean = Prediction(
                *obj.predict(x, torch.arange(x.shape[0], device=x.device)))
        else:
            clean = Prediction(*(t.to(x.device) for t in clean))
        problem.clean = clean
        problem.active = clean.correct > 0 if problem.early_stop else \
            obj.n_valid > 0
        B = x.shape[0]
        worst = WorstCase(x, clean.pred, clean.correct)
        tracked = torch.full((B, ), float('nan'), device=x.device)
        iters = torch.zeros(B, dtype=torch.long, device=x.device)
        if problem.eps > 0 and bool(problem.active.any()):
            found, tracked, iters = steps(problem)
            use_clean = clean.correct < found.correct
            if bool(use_clean.any()):
                found.x[use_clean] = x[use_clean]
                found.pred[use_clean] = clean.pred[use_clean]
                found.correct[use_clean] = clean.correct[use_clean]
            worst = found
    return AttackResult(
        x_adv=worst.x,
        pred=worst.pred,
        correct=worst.correct,
        valid=obj.n_valid.clone(),
        loss=tracked,
        n_iter=iters,
        n_evals=obj.n_evals,
        time=timer.elapsed)


class Timer:
    """Tiny helper: ``with Timer() as t: ...; t.elapsed``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
        return False
