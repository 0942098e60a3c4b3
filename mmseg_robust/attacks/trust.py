"""Can this number be trusted? Sanity checks beside a robust accuracy
(issue #21; docs/evaluation.md, "Can I trust this number?").

A robust accuracy is an upper bound that is only as good as the attack
behind it. Gradient masking (Athalye, Carlini, Wagner 2018: shattered,
stochastic and vanishing gradients) makes gradient attacks fail while the
model is not robust. :func:`trust_checks` runs the accepted sanity checks
(Carlini et al. 2019, "On Evaluating Adversarial Robustness") on a batch,
next to the white-box worst case, and says per check what it measured and
whether it passes or warns:

* ``single_step``: a one-step attack (FGSM: one signed CE-gradient step of
  size ``eps`` from the clean image) must not reach fewer correct pixels
  than the iterative worst case on any image;
* ``large_radius``: at radii where any image can be repainted (64/255 and,
  ``full``, 1.0) a short APGD (``mask_ce``) must bring each image to at
  most the accuracy of a constant prediction (the share of its most
  frequent valid class);
* ``black_box``: the gradient-free square attack must not find fewer
  correct pixels than the white-box worst case on any image;
* ``deterministic``: repeated forward passes give the same logits;
* ``gradient``: the input gradient is finite and not all zero on images
  with correct pixels, and the loss gradient has not underflowed to exactly
  zero on most correct pixels (a saturated softmax);
* ``transfer`` (with ``surrogate=``): adversarial images made on another
  model must not beat the white-box worst case on this one.

"Beat" allows a tolerance of :data:`TOLERANCE` of the image's valid pixels
(at least one pixel), see :func:`tolerance_px`.

The checks are split into per-image measurements (JSON-able dicts, stored
by :class:`~mmseg_robust.evaluation.SEATestLoop` in each image's record) and
their summary (:meth:`TrustReport.from_images`), so that a report over a
dataset is the same summary over every image's measurements, whatever the
batches were.

With ``norm='l2'`` the same checks run in the l2 ball: the one-step
attack steps along the normalised gradient, the large radii are the l2
radii of the same root-mean-square change per value (``r sqrt(C H W)``),
APGD and the transfer attack run in l2, and the square attack (l_inf only)
searches the l_inf ball of radius ``eps / sqrt(C H W)``, which lies inside
the l2 ball: its points are feasible l2 perturbations, so beating the
white-box worst case there still means masking.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .apgd import apgd
from .checks import check_eot, check_images, check_norm, check_radius
from .core import Ball, Prediction, SeedLike, derive_seed, subset_model
from .sea import SEA
from .square import square_attack

__all__ = [
    'trust_checks', 'TrustReport', 'TrustCheck', 'TrustBudget',
    'TRUST_BUDGETS', 'TRUST_LEVELS', 'TOLERANCE', 'SATURATED_SHARE',
    'tolerance_px', 'CHECK_NAMES'
]

#: ``level`` values of :func:`trust_checks` (and ``'none'`` for the
#: evaluation's ``checks`` option, which turns them off).
TRUST_LEVELS = ('none', 'fast', 'full')

#: A weaker attack "beats" the worst case on an image when it leaves fewer
#: correct pixels by more than this share of the image's valid pixels (at
#: least one pixel). SEA's worst case is a minimum over thousands of points
#: but not the true minimum: pixels near the decision boundary that SEA's
#: points happen to leave correct can be flipped by another attack's point
#: by chance (on honest models up to +0.45% of an image, measured in
#: docs/evaluation.md). The broken models' gaps were 1.4-3.1% (FGSM and a
#: short square attack are weak), so 1% sits between; their verdicts rest
#: on the gradient and large-radius checks, which fail by wide margins.
TOLERANCE = 0.01

#: The gradient check warns when, on some image, more than this share of
#: the correctly classified pixels have a loss gradient that underflowed to
#: exactly zero in float32 (softmax saturated: every other class's
#: probability is 0, logit margins above ~100). Honest models have
#: margins of a few units to a few tens: none such pixel. Half the image
#: means the attack's gradient comes from the other half only.
SATURATED_SHARE = 0.5

#: Tolerances of the repeated forward passes (those of
#: ``SEA._check_model``): GPU kernels may differ in the last bits.
RTOL, ATOL = 1e-4, 1e-5

#: Names of the checks, in the report's order.
CHECK_NAMES = ('single_step', 'large_radius', 'black_box', 'deterministic',
               'gradient', 'transfer')


@dataclass(frozen=True)
class TrustBudget:
    """What a level of checks spends per image.

    Attributes:
        large_radii (tuple): Radii of the large-radius check.
        large_iter (int): APGD iterations per large radius.
        square_queries (int): Queries of the square attack per image.
        square_share (float): Share of the images the square attack runs
            on in an evaluation (:class:`SEATestLoop`: images whose dataset
            index ``i`` has ``i % round(1 / share) == 0``).
        repeats (int): Forward passes compared by the determinism check.
        transfer_iter (int): APGD iterations on the surrogate.
        whitebox_iter (int): Iterations of the short SEA run when no
            worst case is given.
    """
    large_radii: Tuple[float, ...]
    large_iter: int
    square_queries: int
    square_share: float
    repeats: int
    transfer_iter: int
    whitebox_iter: int


#: ``fast``: a few dozen passes per image (docs/benchmarks.md: at most 15%
#: of a default ``--eval sea`` run); ``full``: longer runs, radius 1.0 too,
#: the square attack on every image with its default budget.
TRUST_BUDGETS: Dict[str, TrustBudget] = {
    'fast': TrustBudget((64 / 255, ), 10, 100, 0.25, 2, 20, 20),
    'full': TrustBudget((64 / 255, 1.0), 100, 1000, 1.0, 8, 100, 100),
}


def tolerance_px(valid: int, tolerance: float = TOLERANCE) -> int:
    """Pixels by which another attack may beat the worst case on an image
    of ``valid`` valid pixels before a check warns."""
    return max(1, int(math.ceil(tolerance * valid)))


def _key(radius: float) -> str:
    """``64/255 -> '64'``: radii in units of 1/255, as the records say."""
    return f'{round(radius * 255, 6):g}'


def _radius_text(eps: float, norm: str) -> str:
    """The checked radius as printed: ``'8/255'``, ``'l2 0.5'``."""
    return f'{_key(eps)}/255' if norm == 'linf' else f'l2 {eps:g}'


@dataclass
class TrustCheck:
    """One check of a :class:`TrustReport`.

    Attributes:
        name (str): One of :data:`CHECK_NAMES`.
        status (str): ``'pass'``, ``'warn'`` or ``'skip'``.
        numbers (dict): What it measured (numbers only; shares in %).
        message (str): One line: what was measured and, on a warning,
            what it means and what to do.
    """
    name: str
    status: str
    numbers: Dict[str, float] = field(default_factory=dict)
    message: str = ''


@dataclass
class TrustReport:
    """The checks of :func:`trust_checks` on a batch (or, from the records
    of an evaluation, on a dataset).

    Attributes:
        checks (list): One :class:`TrustCheck` per check, in the order of
            :data:`CHECK_NAMES`.
        level (str): ``'fast'`` or ``'full'`` (``'mixed'`` over records
            of both).
        eps (float): The radius checked (a fraction).
        cost (dict): Passes spent per image: ``grad`` (forward+backward),
            ``forward`` (without gradient), ``surrogate`` (passes through
            the surrogate), ``seconds``; and ``n_images``.
        images (list): The per-image measurements the checks summarise.
        norm (str): The threat model of ``eps`` (``'linf'``, ``'l2'``).
    """
    checks: List[TrustCheck]
    level: str
    eps: float
    cost: Dict[str, float] = field(default_factory=dict)
    images: List[dict] = field(default_factory=list)
    norm: str = 'linf'

    @property
    def flagged(self) -> bool:
        """Whether any check warns."""
        return any(c.status == 'warn' for c in self.checks)

    def check(self, name: str) -> TrustCheck:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def warnings(self) -> List[TrustCheck]:
        return [c for c in self.checks if c.status == 'warn']

    def to_dict(self, images: bool = False) -> dict:
        """JSON-able (``summary.json``'s ``trust``); ``images``: also the
        per-image measurements."""
        out = dict(
            flagged=self.flagged,
            level=self.level,
            eps=self.eps,
            eps_255=_key(self.eps) if self.norm == 'linf' else None,
            norm=self.norm,
            cost=dict(self.cost),
            checks=[asdict(c) for c in self.checks])
        if images:
            out['images'] = list(self.images)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> 'TrustReport':
        """The report :meth:`to_dict` wrote."""
        return cls([TrustCheck(**c) for c in d['checks']],
                   d['level'], d['eps'], dict(d.get('cost', {})),
                   list(d.get('images', [])), d.get('norm', 'linf'))

    def format(self) -> str:
        """A text table: a row per check, then the cost."""
        rows = [('check', 'status', 'what was measured')]
        for c in self.checks:
            rows.append((c.name, c.status.upper(), c.message))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [
            f'trust checks ({self.level}) at '
            f'{_radius_text(self.eps, self.norm)} on '
            f'{self.cost.get("n_images", len(self.images))} image(s): ' +
            ('FLAGGED, see the warnings'
             if self.flagged else 'nothing flagged')
        ]
        for i, (a, b, m) in enumerate(rows):
            lines.append(f'  {a:<{w0}}  {b:<{w1}}  {m}')
            if i == 0:
                lines.append(f'  {"-" * w0}  {"-" * w1}  {"-" * 17}')
        lines.append('  cost: ' + _cost_text(self.cost))
        return '\n'.join(lines)

    @classmethod
    def from_images(cls,
                    images: Sequence[dict],
                    eps: float,
                    level: str,
                    cost: Optional[Dict[str, float]] = None,
                    tolerance: float = TOLERANCE,
                    norm: str = 'linf') -> 'TrustReport':
        """Summarise per-image measurements into the checks (the same
        summary for a batch and for a whole evaluation). The report keeps
        every image's measurements, in order (a caller pairs them with its
        images); the checks summarise those with valid pixels."""
        every = list(images)
        images = [m for m in every if m.get('valid', 0) > 0]
        radius = _radius_text(eps, norm)
        checks = [
            _single_step(images, radius, tolerance),
            _large_radius(images, norm),
            _black_box(images, radius, tolerance),
            _deterministic(images),
            _gradient(images),
            _transfer(images, radius, tolerance),
        ]
        cost = dict(cost or {})
        cost.setdefault('n_images', len(every))
        return cls(checks, level, float(eps), cost, every, norm)


def _cost_text(cost: Dict[str, float]) -> str:
    n = max(cost.get('n_images', 0), 1)
    parts = [
        f'{cost.get("grad", 0) / n:.1f} forward+backward and '
        f'{cost.get("forward", 0) / n:.1f} forward passes per image'
    ]
    if cost.get('surrogate'):
        parts.append(f'{cost["surrogate"] / n:.1f} surrogate passes')
    if cost.get('seconds') is not None:
        parts.append(f'{cost["seconds"] / n:.3g} s per image')
    if cost.get('attack_grad'):
        parts.append(
            f'{100 * _equiv(cost) / _equiv(cost, "attack_"):.1f}% of the '
            "attacks' passes (a forward pass counted as 1/3)")
    if cost.get('attack_seconds'):
        parts.append(f'{100 * cost["seconds"] / cost["attack_seconds"]:.1f}'
                     "% of the attacks' time")
    return ', '.join(parts)


def _equiv(cost: dict, prefix: str = '') -> float:
    """Passes in forward+backward equivalents (a forward pass is about a
    third of a forward+backward one, :data:`~.square.QUERIES_PER_ITER`)."""
    return cost.get(prefix + 'grad', 0) + cost.get(prefix + 'forward', 0) / 3


# -- summaries -----------------------------------------------------------
def _pct(num: float, den: float) -> float:
    # None, not NaN, where there is nothing to divide: summary.json stays
    # strict JSON and the report equals itself after a round trip
    return round(100.0 * num / den, 2) if den else None


def _versus(images: Sequence[dict], key: str, tolerance: float):
    """Images measured by ``key`` and, among them, those where it beats
    the worst case beyond the tolerance: ``(measured, beaten, numbers)``."""
    measured = [m for m in images if m.get(key) is not None]
    gaps = [(m['worst'] - m[key], m) for m in measured]
    beaten = [(g, m) for g, m in gaps
              if g > tolerance_px(m['valid'], tolerance)]
    valid = sum(m['valid'] for m in measured)
    numbers = dict(
        n_images=len(measured),
        n_beaten=len(beaten),
        acc=_pct(sum(m[key] for m in measured), valid),
        worst_acc=_pct(sum(m['worst'] for m in measured), valid),
        max_gap_pct=max((round(100.0 * g / m['valid'], 2) for g, m in gaps),
                        default=None),
        tolerance_pct=100 * tolerance)
    return measured, beaten, numbers


def _beaten_text(numbers: dict) -> str:
    return (f"{numbers['n_beaten']} of {numbers['n_images']} image(s) lower "
            f"than the worst case by more than {numbers['tolerance_pct']:g}% "
            f"of their pixels (largest gap {numbers['max_gap_pct']:+.2f}%); "
            f"aAcc {numbers['acc']:.2f}% vs worst case "
            f"{numbers['worst_acc']:.2f}%")


def _against_worst(name: str, key: str, images, tolerance, skipped: str,
                   what: Callable[[List[dict]], str], why: str) -> TrustCheck:
    """A check that another attack (measured under ``key``) does not beat
    the white-box worst case beyond the tolerance: skipped (``skipped``
    says why) where nothing was measured; ``what(measured)`` names the
    attack, ``why`` follows a warning."""
    measured, beaten, n = _versus(images, key, tolerance)
    if not measured:
        return TrustCheck(name, 'skip', n, 'skipped: ' + skipped)
    text = what(measured) + _beaten_text(n)
    if not beaten:
        return TrustCheck(name, 'pass', n, text)
    return TrustCheck(name, 'warn', n, text + why)


def _single_step(images, radius: str, tolerance) -> TrustCheck:
    return _against_worst(
        'single_step', 'single_step', images, tolerance,
        'radius 0 or no image with valid pixels',
        lambda _: f'one-step attack (FGSM, {radius}): ',
        ': a single gradient step beats the iterative attacks, so their '
        'gradients mislead them (gradient masking); robust accuracy is '
        'overestimated. Add gradient-free attacks (--attacks ... square) '
        'and see the black-box check')


def _large_radius(images, norm: str = 'linf') -> TrustCheck:
    measured = [m for m in images if m.get('large')]
    if not measured:
        return TrustCheck('large_radius', 'skip', {}, 'skipped: not run')
    radii = sorted({r for m in measured for r in m['large']}, key=float)
    numbers: Dict[str, float] = dict(n_images=len(measured))
    parts, above_any = [], False
    for r in radii:
        sub = [m for m in measured if r in m['large']]
        valid = sum(m['valid'] for m in sub)
        above = [m for m in sub if m['large'][r] > m['majority']]
        numbers[f'acc_{r}'] = _pct(sum(m['large'][r] for m in sub), valid)
        numbers[f'n_above_{r}'] = len(above)
        above_any |= bool(above)
        where = f'{r}/255' if norm == 'linf' else f'l2 RMS {r}/255'
        parts.append(f'{where}: aAcc {numbers[f"acc_{r}"]:.2f}%, '
                     f'{len(above)} image(s) above')
    valid = sum(m['valid'] for m in measured)
    numbers['constant_acc'] = _pct(sum(m['majority'] for m in measured), valid)
    what = (f'short APGD at a radius that can repaint any image: '
            f'{"; ".join(parts)} the constant-prediction level (its '
            f'most frequent class: {numbers["constant_acc"]:.2f}% pooled)')
    if not above_any:
        return TrustCheck('large_radius', 'pass', numbers, what)
    return TrustCheck(
        'large_radius', 'warn', numbers, what + ': the model holds where '
        'no model can, so the attack fails, not the model (gradient '
        'masking, or inputs outside [0, 1] / clipping inside the model); '
        'do not trust the robust accuracy')


def _black_box(images, radius: str, tolerance) -> TrustCheck:
    inside = ', an l_inf ball inside it' if radius.startswith('l2') else ''
    return _against_worst(
        'black_box', 'square', images, tolerance,
        'no image in the subset for the square attack, or radius 0',
        lambda measured: f'square attack (black-box, {radius}{inside}, '
        f'{measured[0].get("square_queries", "?")} queries): ',
        ': an attack without gradients beats the white-box ones, so their '
        'gradients mislead them (masking); report the lower number '
        '(--attacks ... square adds the square attack to the ensemble)')


def _deterministic(images) -> TrustCheck:
    measured = [m for m in images if m.get('logit_diff') is not None]
    if not measured:
        return TrustCheck('deterministic', 'skip', {}, 'skipped: not run')
    differ = [m for m in measured if m['nondeterministic']]
    valid = sum(m['valid'] for m in measured)
    n = dict(
        n_images=len(measured),
        n_differ=len(differ),
        max_logit_diff=max(m['logit_diff'] for m in measured),
        pred_agreement=_pct(valid - sum(m['disagree'] for m in measured),
                            valid),
        repeats=measured[0].get('repeats', 2))
    what = (f'{n["repeats"]} forward passes of the same images: '
            f'{n["n_differ"]} of {n["n_images"]} image(s) differ (max '
            f'logit difference {n["max_logit_diff"]:.3g}, predictions agree '
            f'on {n["pred_agreement"]:.2f}% of the pixels)')
    if not differ:
        return TrustCheck('deterministic', 'pass', n, what)
    eot = min(m.get('eot', 1) for m in measured)
    n['eot'] = eot
    if eot > 1:
        # the remedy is in place: the attacks average over the randomness
        return TrustCheck(
            'deterministic', 'pass', n, what + f': a randomised model, '
            f'attacked with expectation over transformation (eot={eot}); '
            'if the numbers vary between seeds, raise it')
    return TrustCheck(
        'deterministic', 'warn', n, what + ': the model is randomised '
        '(or in training mode), so one gradient is a sample and the '
        'numbers vary between runs; attack with expectation over '
        'transformation (--eot N, API eot=N, e.g. 10-20) and put the model '
        'in eval mode')


def _gradient(images) -> TrustCheck:
    measured = [m for m in images if m.get('grad_zero') is not None]
    if not measured:
        return TrustCheck('gradient', 'skip', {}, 'skipped: not run')
    alive = [m for m in measured if m['clean'] > 0]
    zero = [m for m in alive if m['grad_zero']]
    nonfinite = [m for m in measured if m['grad_nonfinite']]
    if not alive and not nonfinite:
        return TrustCheck(
            'gradient', 'skip', dict(n_images=0),
            'skipped: no image with correctly classified pixels (nothing '
            'left to attack)')
    correct = sum(m['clean'] for m in alive)
    saturated = [
        m for m in alive if m['saturated'] > SATURATED_SHARE * m['clean']
    ]
    n = dict(
        n_images=len(alive),
        n_zero=len(zero),
        n_nonfinite=len(nonfinite),
        saturated_pct=_pct(sum(m['saturated'] for m in alive), correct),
        n_saturated=len(saturated),
        saturated_limit_pct=100 * SATURATED_SHARE)
    share = '-' if n['saturated_pct'] is None else \
        f'{n["saturated_pct"]:.2f}%'
    what = (f'input gradient of the CE on {n["n_images"]} image(s) with '
            f'correct pixels: {n["n_zero"]} all zero, {n["n_nonfinite"]} '
            f'not finite; {share} of the correct pixels '
            'have a loss gradient that underflowed to 0 (saturated softmax), '
            f'{n["n_saturated"]} image(s) above {SATURATED_SHARE:.0%}')
    if not (zero or nonfinite or saturated):
        return TrustCheck('gradient', 'pass', n, what)
    why = []
    if any(m not in saturated for m in zero):
        why.append('a zero gradient means a non-differentiable step '
                   '(quantisation, rounding, JPEG, argmax, integer casts): '
                   'approximate it by the identity in the backward pass '
                   '(BPDA)')
    if nonfinite:
        why.append('non-finite gradients stop the attacks')
    if saturated:
        why.append('a saturated softmax (huge logits) hides the gradient: '
                   'attack the logits divided by a temperature (same '
                   'predictions)')
    return TrustCheck(
        'gradient', 'warn', n, what + ': the attacks cannot follow the '
        'gradient (masking); ' + '; '.join(why) + '; and see the black-box '
        'check')


def _transfer(images, radius: str, tolerance) -> TrustCheck:
    return _against_worst(
        'transfer', 'transfer', images, tolerance, 'no surrogate model given',
        lambda _: f'APGD (mask_ce) on the surrogate, transferred ({radius}): ',
        ': images made on another model beat the white-box attack on this '
        'one, so its gradients mislead it (masking); report the lower '
        'number')


# -- measurements ----------------------------------------------------------
class _Counted:
    """The model, counting its calls per image: with a gradient graph
    (forward+backward) or without (forward only). Keeps ``subset`` (the
    MMSeg adapter's per-image metadata) and ``training``."""

    def __init__(self, model, counts: Dict[str, int]):
        self.model = model
        self.counts = counts

    @property
    def training(self) -> bool:
        return bool(getattr(self.model, 'training', False))

    def subset(self, idx):
        return _Counted(subset_model(self.model, idx), self.counts)

    def __call__(self, x: Tensor) -> Tensor:
        key = 'grad' if torch.is_grad_enabled() and x.requires_grad else \
            'forward'
        self.counts[key] += int(x.shape[0])
        return self.model(x)


def _correct(logits: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    return ((logits.argmax(1) == y) & valid).flatten(1).sum(1)


def _majority(y: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """``(B,)`` pixels of each image's most frequent valid class."""
    safe = torch.where(valid, y, num_classes)
    counts = F.one_hot(safe.flatten(1), num_classes + 1)[..., :-1].sum(1)
    return counts.amax(1)


def _seeds(seed: SeedLike, tag: str, n: int) -> List[int]:
    """Per-image seeds for ``tag`` (an image's draws depend on its own
    seed only, not on the batch)."""
    seeds = derive_seed(seed, tag)
    if isinstance(seeds, int):
        return [seeds + i for i in range(n)]
    return [int(s) for s in seeds]


def _rows(seq: Sequence[int], rows: Sequence[int]) -> List[int]:
    return [seq[i] for i in rows]


def trust_checks(model: Callable[[Tensor], Tensor],
                 x: Tensor,
                 y: Tensor,
                 eps: float,
                 *,
                 level: str = 'fast',
                 worst: Optional[Union[Tensor, Sequence[int]]] = None,
                 ignore_index: int = 255,
                 seed: SeedLike = 0,
                 amp=False,
                 surrogate: Optional[Callable[[Tensor], Tensor]] = None,
                 mask: Optional[Tensor] = None,
                 square_images: Optional[Sequence[int]] = None,
                 tolerance: float = TOLERANCE,
                 budget: Optional[TrustBudget] = None,
                 norm: str = 'linf',
                 eot: int = 1) -> TrustReport:
    """Sanity checks of a robust accuracy on a batch (module docstring).

    Args:
        model: Callable ``x -> logits`` at label resolution, in eval mode
            (as for the attacks; the MMSeg adapter works).
        x (Tensor): ``(B, C, H, W)`` clean images in [0, 1].
        y (Tensor): ``(B, H', W')`` labels.
        eps (float): The radius of the robust accuracy: l_inf as a
            fraction, l2 (``norm='l2'``) as the l2 norm.
        level (str): ``'fast'`` (a few dozen passes per image, the square
            attack on a quarter of the images) or ``'full'`` (more, and
            radius 1.0); :data:`TRUST_BUDGETS`.
        worst (Tensor | Sequence[int], optional): ``(B,)`` correct valid
            pixels per image of the white-box worst case at ``eps`` (e.g.
            ``SEAResult.correct``); ``None``: a short SEA run
            (``whitebox_iter`` iterations per attack) gives it.
        ignore_index (int): Ignored label.
        seed (SeedLike): Seeds of the random starts (one per image makes
            an image's measurements independent of its batch).
        amp: Precision of the attacks' model calls (as for :func:`apgd`);
            the checks' own passes run in float32.
        surrogate: Another model ``x -> logits`` for the transfer check.
        mask (Tensor, optional): Pixels that may be perturbed.
        square_images (Sequence[int], optional): Batch positions the square
            attack runs on; default: all with ``'full'``, with ``'fast'``
            every fourth (0, 4, 8, ...).
        tolerance (float): Share of an image's valid pixels by which
            another attack may beat the worst case (:data:`TOLERANCE`).
        budget (TrustBudget, optional): Overrides the level's budget.
        norm (str): Threat model of ``eps``: ``'linf'`` or ``'l2'`` (the
            checks in the l2 ball, module docstring).
        eot (int): Expectation over transformation, as the evaluation's
            attacks use it: the checks' gradients are means over ``eot``
            passes, and a randomised model attacked with ``eot > 1``
            passes the determinism check (its message says so).

    Returns:
        TrustReport: The checks; ``flagged`` if any warns. ``images``
        holds the per-image measurements, ``cost`` the passes spent
        (``grad``: forward+backward, ``forward``, ``surrogate``, per the
        whole batch) and the seconds.
    """
    if level not in TRUST_LEVELS[1:]:
        raise ValueError(f'level must be one of {TRUST_LEVELS[1:]}, got '
                         f'{level!r}')
    budget = budget or TRUST_BUDGETS[level]
    eps = check_radius(eps, check_norm(norm))
    eot = check_eot(eot)
    mask = check_images(x, y, mask)
    x = x.detach().float()
    y = y.to(x.device).long()
    B = x.shape[0]
    counts = dict(grad=0, forward=0)
    sur_counts = dict(grad=0, forward=0)
    counted = _Counted(model, counts)
    valid = y != ignore_index
    n_valid = valid.flatten(1).sum(1)
    t0 = time.perf_counter()

    # the gradient, the FGSM step and the saturation share: one pass
    grad, logits = _ce_gradient(counted, x, y, valid, eot)
    num_classes = logits.shape[1]
    clean = _correct(logits, y, valid)
    saturated = _saturated(logits, y, valid)
    where = grad if mask is None else grad * mask
    flat = where.flatten(1)
    grad_nonfinite = ~torch.isfinite(flat).all(1)
    grad_zero = (flat == 0).all(1)
    single = None
    if eps > 0:
        ball = Ball(x, eps, mask, norm)
        x_one = ball.project(x + eps * ball.ascent(grad.nan_to_num(0.0)))
        with torch.no_grad():
            single = _correct(counted(x_one).float(), y, valid)

    # repeated forward passes
    ref, diff, nondet, disagree = _repeats(counted, x, valid, budget.repeats)

    if worst is None:
        worst = _short_whitebox(counted, x, y, eps, budget.whitebox_iter,
                                ignore_index, seed, amp, mask, norm, eot)
    worst = torch.as_tensor(worst, device=x.device).long().view(-1)
    if worst.numel() != B:
        raise ValueError(f'worst must hold one count per image ({B}), got '
                         f'{worst.numel()}')

    clean_pred = Prediction(ref.argmax(1), clean)
    # l2: the radius of the same root-mean-square change per value
    per_value = 1.0 if norm == 'linf' else math.sqrt(x[0].numel())
    large = {}
    for r in budget.large_radii:
        res = apgd(
            counted,
            x,
            y,
            r * per_value,
            budget.large_iter,
            norm=norm,
            eot=eot,
            loss='mask_ce',
            ignore_index=ignore_index,
            start=_seeds(seed, f'trust:large:{_key(r)}', B),
            mask=mask,
            amp=amp,
            clean=clean_pred)
        large[_key(r)] = res.correct

    rows = list(range(B)) if level == 'full' else list(range(0, B, 4))
    if square_images is not None:
        rows = sorted({int(i) for i in square_images})
    square = None
    if rows and eps > 0:
        idx = torch.tensor(rows, device=x.device)
        res = square_attack(
            subset_model(counted, rows),
            x[idx],
            y[idx],
            # l2: the l_inf ball inside the l2 ball (module docstring)
            eps / per_value,
            budget.square_queries,
            seed=_rows(_seeds(seed, 'trust:square', B), rows),
            ignore_index=ignore_index,
            mask=None if mask is None else mask[idx],
            amp=amp,
            clean=Prediction(clean_pred.pred[idx], clean[idx]))
        square = {r: int(c) for r, c in zip(rows, res.correct.tolist())}

    transfer = None
    if surrogate is not None and eps > 0:
        sur = _Counted(surrogate, sur_counts)
        res = apgd(
            sur,
            x,
            y,
            eps,
            budget.transfer_iter,
            loss='mask_ce',
            ignore_index=ignore_index,
            start=_seeds(seed, 'trust:transfer', B),
            mask=mask,
            amp=amp,
            norm=norm,
            eot=eot)
        with torch.no_grad():
            transfer = _correct(counted(res.x_adv).float(), y, valid)
    seconds = time.perf_counter() - t0

    majority = _majority(y, valid, num_classes)
    cols = dict(
        valid=n_valid,
        clean=clean,
        worst=worst,
        single_step=single,
        majority=majority,
        saturated=saturated,
        disagree=disagree,
        transfer=transfer)
    lists = {k: (None if v is None else v.tolist()) for k, v in cols.items()}
    lists['logit_diff'] = diff.tolist()
    lists['nondeterministic'] = nondet.tolist()
    lists['grad_zero'] = grad_zero.tolist()
    lists['grad_nonfinite'] = grad_nonfinite.tolist()
    images = _per_image(
        lists, {
            k: v.tolist()
            for k, v in large.items()
        }, square,
        dict(
            square_queries=budget.square_queries,
            repeats=budget.repeats,
            eot=eot,
            level=level))
    cost = dict(
        grad=counts['grad'],
        forward=counts['forward'],
        surrogate=sur_counts['grad'] + sur_counts['forward'],
        seconds=seconds,
        n_images=B)
    return TrustReport.from_images(images, eps, level, cost, tolerance, norm)


def _repeats(model, x: Tensor, valid: Tensor, repeats: int) -> tuple:
    """``repeats`` forward passes of ``x``: the first one's logits and, per
    image, the largest logit difference to it, whether any pass differs
    beyond the tolerance and the valid pixels whose prediction changed."""
    with torch.no_grad():
        outs = [model(x).float() for _ in range(repeats)]
    ref = outs[0]
    diff = torch.zeros(x.shape[0], device=x.device)
    nondet = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    changed = torch.zeros_like(valid)
    for other in outs[1:]:
        # NaN counts as the largest difference (finite: strict JSON)
        d = (other - ref).abs().nan_to_num(
            torch.finfo(torch.float32).max,
            posinf=torch.finfo(torch.float32).max)
        diff = torch.maximum(diff, d.flatten(1).amax(1))
        close = d <= ATOL + RTOL * ref.abs()
        nondet |= ~close.flatten(1).all(1)
        changed |= other.argmax(1) != ref.argmax(1)
    return ref, diff, nondet, (changed & valid).flatten(1).sum(1)


def _per_image(lists: dict, large: dict, square: Optional[dict],
               common: dict) -> List[dict]:
    """The report's per-image measurements from per-batch lists: ``large``
    by radius key, ``square`` by batch position (the images it ran on),
    ``common`` (budget, EOT, level) in every image."""
    images = []
    for i in range(len(lists['valid'])):
        m = {k: v[i] for k, v in lists.items() if v is not None}
        m['large'] = {k: v[i] for k, v in large.items()}
        if square is not None and i in square:
            m['square'] = square[i]
            m['square_queries'] = common['square_queries']
        m['repeats'] = common['repeats']
        m['eot'] = common['eot']
        m['level'] = common['level']
        images.append(m)
    return images


def _ce_gradient(model,
                 x: Tensor,
                 y: Tensor,
                 valid: Tensor,
                 eot: int = 1) -> Tuple[Tensor, Tensor]:
    """The input gradient of the CE summed over the valid pixels (the mean
    over ``eot`` forward+backward passes, as the attacks' expectation over
    transformation takes it), and the first pass's logits (float32)."""
    total, first = None, None
    for _ in range(eot):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg).float()
            ce = F.cross_entropy(
                logits, torch.where(valid, y, 0), reduction='none') * valid
            grad, = torch.autograd.grad(ce.sum(), xg)
        total = grad if total is None else total + grad
        first = logits.detach() if first is None else first
    return total.detach() / eot, first


def _saturated(logits: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """``(B,)`` correctly classified valid pixels whose CE gradient w.r.t.
    the logits is exactly zero in float32 (every other class's softmax
    probability underflowed to 0)."""
    p = torch.softmax(logits.float(), 1)
    label = torch.where(valid, y, 0).unsqueeze(1)
    other = p.scatter(1, label, 0.0).amax(1)
    hit = (logits.argmax(1) == y) & valid
    return ((other == 0) & hit).flatten(1).sum(1)


def _short_whitebox(model,
                    x,
                    y,
                    eps,
                    n_iter,
                    ignore_index,
                    seed,
                    amp,
                    mask,
                    norm='linf',
                    eot=1) -> Tensor:
    """The worst case of a short SEA run (the default preset)."""
    if eps == 0:
        with torch.no_grad():
            return _correct(model(x).float(), y, y != ignore_index)
    sea = SEA(
        model,
        eps,
        n_iter=n_iter,
        ignore_index=ignore_index,
        seed=seed,
        amp=amp,
        check_model=False,
        norm=norm,
        eot=eot)
    return sea.run(
        x, y, mask=mask, seed=_seeds(seed, 'trust:sea', x.shape[0])).correct
