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
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .checks import (check_eot, check_images, check_n_iter, check_norm,
                     check_radius, warn_if_training)
from .logit_grads import LogitBuffer, input_grad, logit_loss
from .losses import check_logits_labels, check_loss_name
from .precision import (GRAD_EXP, GRAD_EXP_BACKOFF, GRAD_EXP_MAX, GRAD_EXP_MIN,
                        GRAD_TARGET_EXP, RESULT_PRECISIONS, AmpLike, amp_name,
                        autocast_enabled, autocast_to, check_amp,
                        cpu_autocast_supports, ldexp_rows, logit_grad_shift,
                        resolve_amp, scale_logit_grad)

__all__ = [
    'AttackResult', 'Prediction', 'Evaluation', 'Objective', 'AttackHealth',
    'LogitGradScaler', 'eot_mean', 'check_objective', 'UniformNoise',
    'StartLike', 'SeedLike', 'start_noise', 'derive_seed', 'TRACKED_DEFAULTS',
    'default_tracked', 'WorstCase', 'feasible_box', 'project', 'start_point',
    'AttackProblem', 'run_attack_loop', 'take_rows', 'subset_model', 'Timer',
    'AmpLike', 'check_amp', 'resolve_amp', 'amp_name', 'autocast_enabled',
    'autocast_to', 'cpu_autocast_supports', 'RESULT_PRECISIONS', 'GRAD_EXP',
    'GRAD_TARGET_EXP', 'GRAD_EXP_BACKOFF', 'GRAD_EXP_MIN', 'GRAD_EXP_MAX',
    'scale_logit_grad', 'where_rows', 'SYNC_EVERY', 'is_sync_point', 'Ball',
    'DEFAULT', 'run_steps', 'AttackSettings', 'PROBLEM_FIELDS',
    'fixed_step_iterate', 'run_fixed_steps'
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


def subset_model(model: Model, idx: Union[None, Tensor,
                                          Sequence[int]]) -> Model:
    """The model restricted to images ``idx`` of the batch (a tensor of
    positions or, without a read-back from the device, a list of them).

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
#: docs/benchmarks.md. The cosine loss (PAdam-Cos's) is not masked and
#: rises as pixels flip: it tracks itself.
TRACKED_DEFAULTS: Dict[str, str] = {
    'ce': 'ce',
    'bal_ce': 'ce',
    'cossim_ce': 'ce',
    'mask_ce': 'ce',
    'js': 'ce',
    'mask_sph': 'mask_sph',
    'mask_ce_bal': 'ce',
    'cos': 'cos',
}


def default_tracked(loss: str) -> str:
    """The tracked objective APGD uses by default when attacking ``loss``."""
    return TRACKED_DEFAULTS[check_loss_name(loss)]


class Evaluation(NamedTuple):
    """One evaluation of the attack objective on a batch.

    Attributes:
        loss (Tensor): ``(B,)`` attacked objective (mean over all pixels).
        tracked (Tensor): ``(B,)`` tracked objective (docs/attacks.md); the
            same tensor as ``loss`` when the attack tracks its own loss.
        grad (Tensor | None): Gradient of ``loss`` w.r.t. the images, up to
            a positive factor per image under reduced precision (see
            :class:`Objective`); the attacks use only its sign.
        pred (Tensor | None): ``(B, H, W)`` predictions, where computed.
        correct (Tensor): ``(B,)`` correct valid pixels.
    """
    loss: Tensor
    tracked: Tensor
    grad: Optional[Tensor]
    pred: Optional[Tensor]
    correct: Tensor


class LogitGradScaler:
    """Per-image power-of-two scaling of the logits' gradient under reduced
    precision (docs/attacks.md, "Precision"): each image's exponent ``e``
    starts at :data:`GRAD_EXP` and follows the size of its input gradient;
    an image whose scaled backward overflowed gets a zero gradient for that
    step and a smaller ``e``, as a loss scaler backs off. Nothing is read
    on the host.

    Args:
        batch (int): Images.
        device (torch.device): Their device.

    Attributes:
        exp (Tensor): ``(B,)`` int32 exponents.
        overflows (Tensor): ``(B,)`` int32 overflow counts.
        last_overflow (Tensor | None): ``(B,)`` whether the last
            :meth:`back_off` zeroed the image's gradient.
    """

    def __init__(self, batch: int, device: torch.device):
        self.exp = torch.full((batch, ),
                              GRAD_EXP,
                              dtype=torch.int32,
                              device=device)
        self.overflows = torch.zeros(batch, dtype=torch.int32, device=device)
        self.last_overflow: Optional[Tensor] = None

    def scale(self, grad: Tensor, shifts: Optional[list] = None) -> Tensor:
        """Scale ``grad`` (the logits' gradient) per image, in place; with
        ``shifts`` its power of two is appended to it."""
        shift = logit_grad_shift(grad, self.exp)
        if shifts is not None:
            shifts.append(shift)
        return ldexp_rows(grad, shift, out=grad)

    def back_off(self, grad: Tensor) -> Tensor:
        """Adjust the scaling of each image to the size of its input
        gradient; zero the gradient of images where the scaled backward
        pass overflowed."""
        amax = grad.flatten(1).abs().amax(1)
        over = ~torch.isfinite(amax)
        self.last_overflow = over
        self.overflows += over
        # e + floor(log2(2**target / amax)); frexp: amax = m 2**k, m in
        # [0.5, 1), so floor(log2(amax)) = k - 1
        _, k = torch.frexp(amax)
        fit = self.exp + GRAD_TARGET_EXP - (k - 1)
        fit = torch.where(amax > 0, fit, self.exp)
        self.exp = torch.where(over, self.exp - GRAD_EXP_BACKOFF,
                               fit).clamp(GRAD_EXP_MIN, GRAD_EXP_MAX)
        return where_rows(over, torch.zeros_like(grad), grad)


class AttackHealth:
    """Per-image device flags of an attack's objective: non-finite logits
    and all-zero input gradients of images that are not yet broken
    (possible gradient masking). Recording reads nothing on the host;
    :meth:`check` reads the flags at the attacks' few read-back points
    (docs/attacks.md, "Host synchronisation").

    Args:
        y (Tensor): ``(B, H, W)`` labels.
        ignore_index (int): Ignored label.
        loss_name (str): The attacked loss, for the warning.
    """

    def __init__(self, y: Tensor, ignore_index: int, loss_name: str):
        self.y = y
        self.ignore_index = ignore_index
        self.loss_name = loss_name
        self.nonfinite = torch.zeros(
            y.shape[0], dtype=torch.bool, device=y.device)
        self.zero_grad = torch.zeros_like(self.nonfinite)
        self.logits_checked = False
        self.warned_zero_grad = False

    def note_logits(self, logits: Tensor, top: Tensor) -> None:
        """Check shapes and labels once; flag images whose largest logit
        per pixel (``top``, ``(B, H, W)``) is NaN or inf (no host read)."""
        if not self.logits_checked:
            check_logits_labels(logits, self.y, self.ignore_index)
            self.logits_checked = True
        # a NaN propagates through amax
        self.nonfinite |= ~torch.isfinite(top.flatten(1).amax(1))

    def note_zero_grad(self,
                       grad: Optional[Tensor],
                       correct: Tensor,
                       active: Tensor,
                       overflow: Optional[Tensor] = None) -> None:
        """Flag images that are not broken and have an all-zero input
        gradient (``overflow``: images whose gradient was zeroed on
        purpose, not flagged)."""
        if grad is None or self.warned_zero_grad:
            return
        zero = (grad.flatten(1).abs().amax(1) == 0) & (correct > 0) & active
        if overflow is not None:
            zero &= ~overflow
        self.zero_grad |= zero

    def check(self, active: Optional[Tensor] = None) -> bool:
        """Read the device flags (one host synchronisation): raise on
        non-finite logits, warn once about zero gradients.

        Returns:
            bool: Whether any image of ``active`` is still running
            (``True`` without ``active``).
        """
        any_active = torch.ones((), dtype=torch.bool, device=self.y.device) \
            if active is None else active.any()
        flags = torch.stack(
            [any_active,
             self.nonfinite.any(),
             self.zero_grad.any()]).tolist()
        if flags[1]:
            bad = self.nonfinite.nonzero().flatten().tolist()
            raise FloatingPointError(
                f'the model returned NaN or inf logits for batch position(s) '
                f'{bad[:10]}; check the model and its inputs (amp overflow?)')
        if flags[2] and not self.warned_zero_grad:
            self.warned_zero_grad = True
            zero = self.zero_grad.nonzero().flatten().tolist()
            warnings.warn(
                f'the input gradient is zero everywhere for batch position(s) '
                f'{zero[:10]} (loss {self.loss_name!r}) although '
                'pixels are still correctly classified: possible gradient '
                'masking (non-differentiable preprocessing, saturated '
                'outputs, or integer casts). Robust accuracy may be '
                'overestimated.',
                stacklevel=5)
        return bool(flags[0])


def eot_mean(sample: Callable[[], tuple], eot: int,
             shifts: Optional[list]) -> tuple:
    """Expectation over transformation: the mean of ``eot`` calls of
    ``sample() -> (loss, tracked, grad, correct)`` (the tracked objective
    is the loss itself where ``sample`` returns the same tensor for both;
    counts rounded to the nearest integer). With ``shifts`` the gradients
    come scaled by per-image powers of two (appended to ``shifts`` by each
    call) and are brought to a common one, exactly."""
    loss, tracked, grad, correct = sample()
    if eot == 1:
        return loss, tracked, grad, correct
    # sums over the samples (one gradient scale for all of them)
    own = tracked is loss
    for _ in range(eot - 1):
        more = sample()
        loss = loss + more[0]
        tracked = tracked + more[1]
        if shifts is not None:
            # both to the smaller power of two: exact, no overflow
            low = torch.minimum(shifts[0], shifts[-1])
            grad = ldexp_rows(grad, low - shifts[0]) + ldexp_rows(
                more[2], low - shifts[-1])
            shifts[:] = [low]
        elif grad is not None:
            grad = grad + more[2]
        correct = correct + more[3]
    loss = loss / eot
    tracked = loss if own else tracked / eot
    grad = None if grad is None else grad / eot
    # the mean count, rounded to the nearest integer
    correct = torch.div(2 * correct + eot, 2 * eot, rounding_mode='floor')
    return loss, tracked, grad, correct


def check_objective(loss: str, targeted: bool, track: Optional[str],
                    result_precision: str) -> str:
    """Check an :class:`Objective`'s settings; returns the loss name."""
    check_loss_name(loss)
    if targeted and loss != 'ce':
        raise ValueError("targeted attacks minimise the CE to the target "
                         f"labels: use loss='ce', got {loss!r}")
    if track is not None:
        check_loss_name(track)
    if result_precision not in RESULT_PRECISIONS:
        raise ValueError(f'result_precision must be one of '
                         f'{RESULT_PRECISIONS}, got {result_precision!r}')
    return loss


class Objective:
    """Evaluates the attack objective, predictions and input gradients of a
    batch.

    Nothing is read on the host per evaluation (:class:`AttackHealth`).

    Args:
        model: Callable ``x -> logits`` at label resolution.
        y (Tensor): ``(B, H, W)`` labels (targeted: target labels).
        loss (str): Name in :data:`~.losses.PIXEL_LOSSES`.
        ignore_index (int): Ignored label.
        targeted (bool): Minimise CE to ``y`` instead of maximising ``loss``.
        amp (AmpLike): Precision of the model calls; losses stay float32,
            the logits' gradient is scaled (:class:`LogitGradScaler`).
        class_weights (Tensor, optional): For ``mask_ce_bal``.
        track (str, optional): Loss whose pixel mean is the tracked
            objective; ``None`` tracks ``loss`` itself. Targeted attacks
            always track their own objective.
        result_precision (str): ``'fp32'`` (default): :meth:`predict` with
            ``final=True`` evaluates in float32 whatever ``amp`` says, so
            the points an attack returns are judged in one precision;
            ``'amp'``: in the attack's precision.
        eot (int): Expectation over transformation for randomised models:
            every evaluation averages loss, tracked objective, correct
            pixels and input gradient over ``eot`` forward+backward passes
            (Athalye et al. 2018); ``1`` for deterministic models.

    Attributes:
        closed_form (bool | None): ``False``: the losses' logit gradients by
            autograd; ``None``: :func:`~.logit_grads.logit_loss` decides.
        buffer (LogitBuffer): Reused by the closed form on the CPU.
    """

    def __init__(self,
                 model: Model,
                 y: Tensor,
                 loss: str = 'ce',
                 ignore_index: int = 255,
                 targeted: bool = False,
                 amp: AmpLike = False,
                 class_weights: Optional[Tensor] = None,
                 track: Optional[str] = None,
                 result_precision: str = 'fp32',
                 eot: int = 1):
        self.model = model
        self.eot = check_eot(eot)
        self.y = y.long()
        self.loss_name = check_objective(loss, targeted, track,
                                         result_precision)
        self.track_name = None if (targeted or track == loss) else track
        self.closed_form: Optional[bool] = None
        self.buffer = LogitBuffer()
        self.ignore_index = ignore_index
        self.targeted = targeted
        self.amp = resolve_amp(amp, self.y.device)
        self.result_precision = result_precision
        self.class_weights = class_weights
        self.valid = (self.y != ignore_index)
        self.safe_y = torch.where(self.valid, self.y, 0)
        self.n_valid = self.valid.flatten(1).sum(1)
        self.n_evals = 0
        self.health = AttackHealth(self.y, ignore_index, self.loss_name)
        # gradient scaling under reduced precision
        self.scaler = LogitGradScaler(self.y.shape[0], y.device)

    @property
    def grad_exp(self) -> Tensor:
        """``(B,)`` exponents of the gradient scaling
        (:class:`LogitGradScaler`)."""
        return self.scaler.exp

    @property
    def grad_overflows(self) -> Tensor:
        """``(B,)`` overflows of the scaled backward pass per image."""
        return self.scaler.overflows

    def note_logits(self, logits: Tensor, top: Tensor) -> None:
        """See :meth:`AttackHealth.note_logits`."""
        self.health.note_logits(logits, top)

    def _count(self, hit: Tensor) -> Tensor:
        """Correct valid pixels per image from ``hit``, the pixels whose
        prediction is the label (targeted: not yet the target)."""
        if self.targeted:
            hit = ~hit
        return (hit & self.valid).flatten(1).sum(1)

    @torch.no_grad()
    def predict(self, x: Tensor, final: bool = False) -> Prediction:
        """Predictions and correct-pixel counts (no loss, no gradient).

        ``final=True``: points whose accuracy is reported, evaluated in the
        result precision (float32 unless ``result_precision='amp'``).
        """
        fp32 = final and self.result_precision == 'fp32'
        with autocast_to(x.device, None if fp32 else self.amp):
            logits = self.model(x)
        top, pred = logits.float().max(1)
        self.note_logits(logits, top)
        self.n_evals += x.shape[0]
        return Prediction(pred, self._count(pred == self.y))

    def reduced_precision(self, device: torch.device) -> bool:
        """Whether model calls on ``device`` run below float32 (this
        objective's ``amp`` or an enclosing autocast context)."""
        return self.amp is not None or autocast_enabled(device.type)

    def evaluate(self,
                 x: Tensor,
                 step: Optional[int] = None,
                 total_steps: Optional[int] = None,
                 need_grad: bool = True) -> Evaluation:
        """Evaluate images ``x`` (the whole batch).

        Loss, tracked objective and the logits' gradient come from one
        pass over the logits (:func:`~.logit_grads.logit_loss`); the
        model's backward is the only autograd pass.

        Correctness is "the label's logit is maximal"
        (:func:`~.losses.label_is_max`, no argmax per iteration); the
        predictions of the points an attack returns come from
        :meth:`predict`.

        Returns:
            Evaluation: per-image attacked and tracked objectives (means over
            all pixels of the loss maps), the gradient of the attacked one
            w.r.t. ``x`` (``None`` without ``need_grad``; scaled per image
            under reduced precision) and correct-pixel counts (``pred`` is
            ``None``).
        """
        x = x.detach()
        scaled = need_grad and self.reduced_precision(x.device)
        # under scaling each sample's gradient comes with its own power of
        # two (LogitGradScaler.scale): EOT brings them to a common one
        shifts = [] if scaled and self.eot > 1 else None
        loss, tracked, grad, correct = eot_mean(
            lambda: self._sample(x, step, total_steps, need_grad, scaled,
                                 shifts), self.eot, shifts)
        if scaled:
            grad = self.scaler.back_off(grad)
        self.n_evals += x.shape[0] * self.eot
        return Evaluation(loss, tracked, grad, None, correct)

    def _sample(
        self,
        x: Tensor,
        step: Optional[int],
        total_steps: Optional[int],
        need_grad: bool,
        scaled: bool,
        shifts: Optional[list] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Tensor]:
        """One forward (+ input-backward) pass of :meth:`evaluate`: attacked
        and tracked objectives, the input gradient (scaled, not yet backed
        off) and correct-pixel counts; with ``shifts`` the scaling's power
        of two per image is appended to it."""
        x = x.requires_grad_(need_grad)
        with torch.enable_grad() if need_grad else torch.no_grad():
            with autocast_to(x.device, self.amp):
                logits = self.model(x)
            logits = logits.float()
        top = logits.detach().amax(1)
        self.note_logits(logits, top)  # checks shapes and labels first
        ev = logit_loss(
            logits,
            self.safe_y,
            self.valid,
            'ce' if self.targeted else self.loss_name,
            self.track_name,
            self.closed_form,
            ignore_index=self.ignore_index,
            step=step,
            total_steps=total_steps,
            class_weights=self.class_weights,
            need_grad=need_grad,
            scale=1.0 / top[0].numel(),  # the pixel mean
            negate=self.targeted,
            out=self.buffer.get(logits),
            top=top)
        grad = None
        if need_grad:
            if scaled:
                self.scaler.scale(ev.grad, shifts)
            grad = input_grad(logits, x, ev.grad)
        loss = ev.loss.flatten(1).mean(1)
        tracked = loss if ev.tracked is None else ev.tracked.flatten(1).mean(1)
        return loss, tracked, grad, self._count(ev.hit)

    def note_zero_grad(self, grad: Optional[Tensor], correct: Tensor,
                       active: Tensor) -> None:
        """Flag images that are not broken and have an all-zero input
        gradient (possible gradient masking); :meth:`check` warns."""
        self.health.note_zero_grad(grad, correct, active,
                                   self.scaler.last_overflow)

    def check(self, active: Optional[Tensor] = None) -> bool:
        """See :meth:`AttackHealth.check`."""
        return self.health.check(active)


def _rows_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``(B,)`` mask viewed to broadcast over ``like``'s dimensions."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per image (first dimension): ``a`` where ``mask``, else ``b``."""
    return torch.where(_rows_mask(mask, a), a, b)


class WorstCase:
    """The lowest-accuracy point seen so far, per image: an APGD run's
    output and SEA's worst case over its attacks.

    Updates select with ``torch.where`` and never read device memory on
    the host.

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
        self.pred = None if pred is None else pred.clone()
        self.correct = correct.clone()
        self.score = None if score is None else score.clone()

    def update(self,
               idx: Optional[Tensor],
               x: Tensor,
               pred: Optional[Tensor],
               correct: Tensor,
               score: Optional[Tensor] = None,
               where: Optional[Tensor] = None) -> Tensor:
        """Keep the points of images ``idx`` (``None``: the whole batch)
        that are better: fewer correct pixels or, if this worst case keeps
        scores, as few and a higher ``score``; with ``where``, only images
        where it is True are considered.

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

        def rows(t):
            return t if idx is None else t[idx]

        cur = rows(self.correct)
        better = correct < cur
        scored = self.score is not None and score is not None
        if scored:
            better |= (correct == cur) & (score > rows(self.score))
        if where is not None:
            better &= where

        def put(dst, src):
            if idx is None:
                return where_rows(better, src, dst)
            dst[idx] = where_rows(better, src, dst[idx])
            return dst

        self.x = put(self.x, x)
        # the step loops track points and counts only (predictions of the
        # returned points come from one forward pass at the end)
        self.pred = None if pred is None or self.pred is None else put(
            self.pred, pred)
        self.correct = put(self.correct, correct)
        if scored:
            self.score = put(self.score, score)
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


def _norms(t: Tensor) -> Tensor:
    """Per-image l_2 norms of ``t``, shaped to broadcast over it."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class Ball:
    """The feasible set of one run: the ``norm`` ball of ``radius`` around
    the clean images ``x``, intersected with [0, 1]; masked-out pixels
    (padding) stay at their value.

    l_inf: the box ``[max(x - r, 0), min(x + r, 1)]``, the exact projection
    is clipping, the steepest-ascent direction the gradient's sign. l_2
    (Croce and Hein 2020, APGD's l_2 version): the projection scales the
    perturbation into the ball and then clips to [0, 1], which moves every
    pixel towards ``x`` and so stays inside the ball (not the exact
    projection onto the intersection, the same as AutoAttack's); the
    direction is the gradient divided by its l_2 norm.

    Args:
        x (Tensor): ``(B, C, H, W)`` clean images.
        radius (float): The radius.
        mask (Tensor, optional): ``(B, 1, H, W)`` bool, pixels that may
            change.
        norm (str): ``'linf'`` or ``'l2'``.
    """

    def __init__(self,
                 x: Tensor,
                 radius: float,
                 mask: Optional[Tensor] = None,
                 norm: str = 'linf'):
        self.x, self.radius, self.mask = x, float(radius), mask
        self.norm = check_norm(norm)
        if self.norm == 'linf':
            self.lower, self.upper = feasible_box(x, radius, mask)

    def _masked(self, t: Tensor) -> Tensor:
        return t if self.mask is None else torch.where(self.mask, t, 0.0)

    def project(self, z: Tensor) -> Tensor:
        """``z`` moved into the feasible set."""
        if self.norm == 'linf':
            return project(z, self.lower, self.upper)
        d = self._masked(z - self.x)
        # the radius divided by the norm, at most 1 (0/0 -> 0: no move)
        scale = (self.radius / _norms(d).clamp_min(1e-12)).clamp_max(1.0)
        return (self.x + d * scale).clamp_(0.0, 1.0)

    def ascent(self, grad: Tensor) -> Tensor:
        """The unit-norm steepest-ascent direction for ``grad`` (zero where
        the gradient is zero); a positive factor per image does not change
        it (the gradient scaling under reduced precision)."""
        if self.norm == 'linf':
            return grad.sign()
        g = self._masked(grad)
        # divided by its largest entry first: the squares of a tiny
        # gradient (entries below ~1e-19) would underflow in the norm
        top = g.abs().flatten(1).amax(1).view(-1, *([1] * (g.dim() - 1)))
        g = g / top.clamp_min(torch.finfo(g.dtype).tiny)
        return g / _norms(g).clamp_min(1e-30)

    def random_point(self, noise: Tensor) -> Tensor:
        """A random start from uniform noise in [-1, 1] (not projected):
        l_inf ``x + r * noise``; l_2 on the sphere of radius ``r`` in the
        noise's direction (as AutoAttack's l_2 APGD starts)."""
        if self.norm == 'linf':
            return self.x + self.radius * noise
        d = self._masked(noise)
        return self.x + self.radius * d / _norms(d).clamp_min(1e-12)


def start_point(ball: Ball, start: StartLike) -> Tensor:
    """The first iterate of a run in ``ball`` (see :data:`StartLike`),
    inside it."""
    x = ball.x
    if start is None:
        return x.clone()
    if isinstance(start, Tensor):
        return ball.project(start.detach().to(x))
    noise = start.noise if isinstance(start, UniformNoise) else start_noise(
        x, start)
    return ball.project(ball.random_point(noise))


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
    if start is not DEFAULT:
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
    """The one ``DEFAULT`` marker: copies and unpickled copies are the same
    object, so settings values holding it can be copied and pickled."""

    def __repr__(self):
        return 'default'

    def __reduce__(self):
        return 'DEFAULT'

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


#: marks an argument left at its default (``start`` of the attacks)
DEFAULT = _Default()


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
        norm (str): The threat model, ``'linf'`` or ``'l2'``.
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
    norm: str = 'linf'

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
               amp: AmpLike = False,
               targeted: bool = False,
               class_weights: Optional[Tensor] = None,
               early_stop: bool = True,
               track: Optional[str] = None,
               check_iter: bool = True,
               validate: bool = True,
               result_precision: str = 'fp32',
               norm: str = 'linf',
               eot: int = 1) -> 'AttackProblem':
        """Check the inputs (unless ``validate=False``: callers such as
        :class:`~.sea.SEA` check once for all their attacks;
        ``check_iter=False``: the attack checked ``n_iter`` itself) and
        build the objective."""
        if validate:
            warn_if_training(model)
            eps = check_radius(eps, norm)
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
            track=track,
            result_precision=result_precision,
            eot=eot)
        return cls(
            obj,
            x,
            float(eps),
            int(n_iter),
            mask,
            start,
            early_stop,
            norm=check_norm(norm))

    def ball(self, radius: float) -> Ball:
        """The feasible set at ``radius`` in the problem's norm."""
        return Ball(self.x, radius, self.mask, self.norm)

    def start_point(self, ball: Ball, start: StartLike = DEFAULT) -> Tensor:
        """The first iterate in ``ball`` (default: the problem's
        start)."""
        return start_point(ball, self.start if start is DEFAULT else start)

    def fallback(self) -> WorstCase:
        """The clean images as the worst case so far."""
        return WorstCase(self.x, self.clean.pred, self.clean.correct)


#: An attack's step loop: ``steps(problem) -> (worst case, best tracked
#: objective (B,), iterations (B,))``.
StepLoop = Callable[[AttackProblem], Tuple[WorstCase, Tensor, Tensor]]

#: The step loops read device values on the host (early exit of a finished
#: batch, non-finite logits, zero gradients) only every this many
#: iterations of a run; everything else stays on the device
#: (docs/attacks.md, "Host synchronisation").
SYNC_EVERY = 25


def fixed_step_iterate(problem: 'AttackProblem', k: int, x_adv: Tensor,
                       best: WorstCase, best_loss: Tensor, attacked: Tensor,
                       active: Tensor) -> Tuple['Evaluation', Tensor, Tensor]:
    """Iterate ``k`` of a fixed-step loop (PGD, PAdam; ``n_iter`` steps, the
    last iterate only evaluated): evaluate ``x_adv`` (with its gradient
    unless it is the last), count it into the worst case ``best`` (the
    start always, even if worse than clean; later iterates where
    ``active``), keep the highest attacked objective and stop images with
    no correct pixel left (``early_stop``).

    Returns:
        tuple: The evaluation, ``best_loss`` and ``active`` afterwards.
    """
    obj, n_iter = problem.obj, problem.n_iter
    ev = obj.evaluate(
        x_adv,
        step=min(k + 1, n_iter),
        total_steps=n_iter,
        need_grad=k < n_iter)
    if k == 0:
        obj.note_zero_grad(ev.grad, ev.correct, attacked)
        # the starting point counts even if worse than clean
        best.x = where_rows(attacked, x_adv, best.x)
        best.correct = torch.where(attacked, ev.correct, best.correct)
        best.pred = None  # computed for the returned points only
    else:
        best.update(None, x_adv, None, ev.correct, where=active)
    best_loss = torch.where(active, torch.fmax(best_loss, ev.loss), best_loss)
    if problem.early_stop:
        active = active & (best.correct > 0)
    return ev, best_loss, active


def run_fixed_steps(problem: 'AttackProblem', ball: 'Ball',
                    step: Callable[[int, Tensor, Tensor], Tensor]):
    """The loop of the fixed-step attacks (PGD, PAdam): ``n_iter`` steps
    ``x_{k+1} = step(k, x_k, grad_k)`` from the problem's start in
    ``ball`` (each iterate, the start included, evaluated by
    :func:`fixed_step_iterate`; the last one only evaluated). Finished
    images keep their point; shapes stay fixed and the host reads back only
    every :data:`SYNC_EVERY` iterations.

    Returns:
        tuple: ``(worst case, best attacked objective (B,), iterations
        (B,))``, as a :data:`StepLoop` returns them.
    """
    obj, x = problem.obj, problem.x
    B, n_iter = x.shape[0], problem.n_iter
    attacked = active = problem.active
    iters = torch.zeros(B, dtype=torch.long, device=x.device)
    best_loss = torch.full((B, ), float('nan'), device=x.device)
    x_adv = problem.start_point(ball)
    best = problem.fallback()
    for k in range(n_iter + 1):
        ev, best_loss, active = fixed_step_iterate(problem, k, x_adv, best,
                                                   best_loss, attacked, active)
        if k < n_iter:
            grad = ev.grad
            del ev
            x_adv = where_rows(active, step(k, x_adv, grad), x_adv)
            del grad
            iters += active
            if is_sync_point(k) and not obj.check(active):
                break
    return best, best_loss, iters


def is_sync_point(k: int) -> bool:
    """Whether the step loops read back after their ``k``-th iteration
    (counting from 0)."""
    return (k + 1) % SYNC_EVERY == 0


def run_attack_loop(steps: StepLoop,
                    problem: AttackProblem,
                    clean: Optional[Prediction] = None) -> 'AttackResult':
    """The skeleton of every attack: clean prediction, the images to
    attack, the attack's step loop, the result.

    The result is, per image, the step loop's lowest-accuracy point unless
    the clean image is strictly better, so an attack never reports more than
    the clean accuracy. Under reduced precision the returned points are
    evaluated again in float32 (``result_precision='fp32'``, the default),
    so the reported predictions of clean and adversarial images share one
    precision.
    """
    obj, x = problem.obj, problem.x
    with Timer(x.device) as timer:
        if clean is None:
            clean = obj.predict(x, final=True)
        else:
            clean = Prediction(*(t.to(x.device) for t in clean))
        problem.clean = clean
        problem.active = clean.correct > 0 if problem.early_stop else \
            obj.n_valid > 0
        B = x.shape[0]
        worst = WorstCase(x, clean.pred, clean.correct)
        tracked = torch.full((B, ), float('nan'), device=x.device)
        iters = torch.zeros(B, dtype=torch.long, device=x.device)
        if problem.eps > 0:
            found, tracked, iters = steps(problem)
            # the step loops count correct pixels without an argmax; the
            # predictions of the returned points, in the result precision
            found.pred, found.correct = obj.predict(found.x, final=True)
            # the clean image where it is strictly better
            use_clean = clean.correct < found.correct
            worst.x, worst.pred, worst.correct = (where_rows(
                use_clean, a,
                b) for a, b in ((x, found.x), (clean.pred, found.pred),
                                (clean.correct, found.correct)))
        obj.check()
    return AttackResult(
        x_adv=worst.x,
        pred=worst.pred,
        correct=worst.correct,
        valid=obj.n_valid.clone(),
        loss=tracked,
        n_iter=iters,
        n_evals=obj.n_evals,
        time=timer.elapsed,
        extra=dict(
            precision=amp_name(obj.amp),
            result_precision='fp32'
            if obj.amp is None else obj.result_precision))


def run_steps(steps: StepLoop,
              what: str,
              random_default: bool,
              model: Model,
              x: Tensor,
              y: Tensor,
              eps: float,
              n_iter: int,
              loss: str,
              start: StartLike,
              legacy: dict,
              clean: Optional[Prediction] = None,
              track_loss: Optional[str] = None,
              **kwargs) -> 'AttackResult':
    """What every public attack function does: resolve ``start`` (a
    default random start where ``random_default``, the deprecated
    ``legacy`` keywords of ``what``) and the tracked objective, build the
    :class:`AttackProblem` (``kwargs``) and run ``steps`` in the skeleton
    (:func:`run_attack_loop`)."""
    start = start_from_legacy(start, legacy, random_default, what)
    if start is DEFAULT:
        start = 0 if random_default else None
    problem = AttackProblem.create(
        model,
        x,
        y,
        eps,
        n_iter,
        loss,
        start=start,
        track=default_tracked(loss) if track_loss is None else track_loss,
        **kwargs)
    return run_attack_loop(steps, problem, clean)


#: The settings an :class:`AttackProblem` takes from an attack's settings.
PROBLEM_FIELDS = ('ignore_index', 'amp', 'targeted', 'class_weights',
                  'early_stop', 'result_precision', 'norm', 'eot')


@dataclass(frozen=True)
class AttackSettings:
    """Everything of a white-box attack but the model, the images and the
    labels, as one immutable value; the attacks (:class:`~.apgd.APGD`,
    :class:`~.pgd.PGD`, :class:`~.padam.PAdam`, :class:`~.square.Square`)
    subclass it and are called
    as ``settings(model, x, y)``. :func:`dataclasses.replace` gives changed
    copies; the values are checked when the attack runs.

    Attributes:
        eps (float): Radius (l_inf: a fraction of the pixel range, e.g.
            ``8/255``; l_2: the norm of the perturbation).
        n_iter (int): Iterations.
        loss (str): Pixel loss (:data:`~.losses.PIXEL_LOSSES`).
        start (StartLike): Where to start (:data:`StartLike`); ``DEFAULT``:
            the attack's own default.
        ignore_index (int): Label of ignored pixels.
        amp (AmpLike): Precision of the model calls.
        targeted (bool): Minimise CE to the labels instead.
        class_weights (Tensor, optional): For ``loss='mask_ce_bal'``.
        early_stop (bool): Stop an image once none of its valid pixels is
            correct.
        track_loss (str, optional): Tracked objective (APGD's step-size
            control); ``None``: the attack's default.
        result_precision (str): Precision of the returned predictions.
        norm (str): ``'linf'`` or ``'l2'``.
        eot (int): Expectation over transformation (passes per step).
    """
    eps: float
    n_iter: int
    loss: str = 'mask_ce'
    start: StartLike = DEFAULT
    ignore_index: int = 255
    amp: AmpLike = False
    targeted: bool = False
    class_weights: Optional[Tensor] = field(default=None, compare=False)
    early_stop: bool = True
    track_loss: Optional[str] = None
    result_precision: str = 'fp32'
    norm: str = 'linf'
    eot: int = 1

    #: the attack's name in messages, and whether its default start is
    #: random (a seed) or the clean image
    what = 'attack'
    random_default = True

    def __call__(self,
                 model: Model,
                 x: Tensor,
                 y: Tensor,
                 mask: Optional[Tensor] = None,
                 clean: Optional[Prediction] = None,
                 validate: bool = True,
                 **legacy) -> 'AttackResult':
        """Attack a batch.

        Args:
            model: Callable mapping images ``(B, 3, H, W)`` in [0, 1] to
                logits ``(B, K, H', W')`` at label resolution. Put it in
                eval mode.
            x (Tensor): Clean images in [0, 1].
            y (Tensor): ``(B, H', W')`` labels (targeted: target labels).
            mask (Tensor, optional): ``(B, H, W)`` or ``(B, 1, H, W)`` bool;
                only pixels where it is True are perturbed (e.g. not
                padding).
            clean (Prediction, optional): Precomputed ``(pred, correct)`` at
                ``x``.
            validate (bool): Check the inputs (callers that checked them
                already, such as :class:`~.sea.SEA`, skip it).
            **legacy: ``seed``, ``random_start``, ``noise``, ``x_init`` of
                earlier releases (deprecated; use ``start``).

        Returns:
            AttackResult: Per image the lowest-accuracy point found (or
            ``x`` where the clean image is better); ``loss`` holds the best
            tracked objective.
        """
        return self.attack(model, x, y, mask, clean, validate, legacy)

    def attack(self, model: Model, x: Tensor, y: Tensor,
               mask: Optional[Tensor], clean: Optional[Prediction],
               validate: bool, legacy: dict) -> 'AttackResult':
        """The attack itself (each kind of attack defines it)."""
        raise NotImplementedError

    @classmethod
    def from_options(cls,
                     options: dict,
                     what: str = 'attack',
                     refuse: Sequence[str] = (),
                     **fixed) -> Tuple['AttackSettings', dict]:
        """The settings in the keyword arguments ``options`` of function
        ``what`` plus ``fixed`` (its positional ones), and the rest (the
        start keywords of earlier releases, or unknown ones). Fields in
        ``refuse`` (those ``what`` does not take) are a TypeError."""
        refused = sorted(set(options) & set(refuse))
        if refused:
            raise TypeError(f'{what}() got unexpected keyword argument(s) '
                            f'{refused}')
        options = dict(options, **fixed)
        names = {f.name for f in fields(cls)}
        return cls(**{
            k: v
            for k, v in options.items() if k in names
        }), {
            k: v
            for k, v in options.items() if k not in names
        }

    def run(self,
            steps: StepLoop,
            model: Model,
            x: Tensor,
            y: Tensor,
            mask: Optional[Tensor] = None,
            clean: Optional[Prediction] = None,
            validate: bool = True,
            legacy: Optional[dict] = None,
            **overrides) -> 'AttackResult':
        """Run the step loop ``steps`` with these settings
        (:func:`run_steps`); ``overrides``: ``loss``, ``n_iter``,
        ``track_loss``, ``check_iter`` as the attack needs them."""
        loss = overrides.pop('loss', self.loss)
        return run_steps(
            steps,
            self.what,
            self.random_default,
            model,
            x,
            y,
            self.eps,
            overrides.pop('n_iter', self.n_iter),
            loss,
            self.start,
            legacy or {},
            clean=clean,
            track_loss=overrides.pop('track_loss', self.track_loss),
            validate=validate,
            mask=mask,
            **overrides,
            **{name: getattr(self, name)
               for name in PROBLEM_FIELDS})


class Timer:
    """Tiny helper: ``with Timer(device) as t: ...; t.elapsed``. On a CUDA
    device it waits for the queued work at both ends, so that the time is
    the device's, not the time it took to queue it."""

    def __init__(self, device: Union[str, torch.device, None] = None):
        self.cuda = device is not None and torch.device(device).type == 'cuda'

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __enter__(self):
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.elapsed = time.perf_counter() - self.start
        return False
