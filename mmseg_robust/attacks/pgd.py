"""Fixed-step PGD (l_inf or l_2) and its segmentation variants
(baselines).

``loss='ce'`` is PGD (Madry et al.), ``loss='bal_ce'`` is SegPGD (Gu et al.
2022) and ``loss='cossim_ce'`` is CosPGD (Agnihotri and Keuper 2023).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .checks import check_eps, check_norm, check_radius
from .core import (DEFAULT, AttackProblem, AttackResult, AttackSettings,
                   Prediction, run_fixed_steps, start_from_legacy)

__all__ = [
    'PGD', 'pgd', 'pgd_train', 'pgd_step_size', 'PAPER_PGD_STEP_SIZES',
    'L2_PGD_STEP_RATIO'
]

#: Step sizes the paper's appendix uses for PGD, SegPGD and CosPGD,
#: keyed by eps in units of 1/255.
PAPER_PGD_STEP_SIZES = {
    0.25: 8e-4,
    0.5: 9e-4,
    1.0: 1e-3,
    2.0: 2e-3,
    4.0: 3e-3,
    8.0: 5e-3,
    12.0: 6e-3,
}

#: Default l_2 PGD step size as a fraction of the radius: the ratio of the
#: paper's l_inf step size to the radius at 8/255 (5e-3 / (8/255), about
#: 0.16), the radius of its main tables; the paper has no l_2 baselines.
L2_PGD_STEP_RATIO = 5e-3 / (8 / 255)


def pgd_step_size(eps: float, norm: str = 'linf') -> float:
    """The paper's PGD step size for ``eps`` (a fraction, e.g. ``4/255``).

    Table values are used where they exist; between them the step size is
    interpolated linearly in eps, below the table it scales with eps, and
    above it the last segment is extended (16/255 -> 7e-3). For
    ``norm='l2'`` (steps along the normalised gradient):
    ``L2_PGD_STEP_RATIO * eps``.
    """
    if check_norm(norm) == 'l2':
        return L2_PGD_STEP_RATIO * check_radius(eps, norm)
    eps = check_eps(eps)
    e = eps * 255.0
    keys = sorted(PAPER_PGD_STEP_SIZES)
    for k in keys:
        if math.isclose(e, k, rel_tol=1e-6):
            return PAPER_PGD_STEP_SIZES[k]
    if e <= keys[0]:
        return PAPER_PGD_STEP_SIZES[keys[0]] * e / keys[0]
    if e >= keys[-1]:
        lo, hi = keys[-2], keys[-1]
    else:
        hi = next(k for k in keys if k > e)
        lo = keys[keys.index(hi) - 1]
    s_lo, s_hi = PAPER_PGD_STEP_SIZES[lo], PAPER_PGD_STEP_SIZES[hi]
    return s_lo + (s_hi - s_lo) * (e - lo) / (hi - lo)


def _pgd_steps(problem: AttackProblem, step_size: float):
    """PGD's step loop: ``n_iter`` sign-gradient steps, each iterate (the
    start included) evaluated, the lowest-accuracy one kept. Shapes stay
    fixed and the host reads back only every
    :data:`~.core.SYNC_EVERY` iterations (see :func:`~.apgd.apgd_run`)."""
    ball = problem.ball(problem.eps)
    return run_fixed_steps(
        problem, ball, lambda k, x_adv, grad: ball.project(x_adv + step_size *
                                                           ball.ascent(grad)))


@dataclass(frozen=True)
class PGD(AttackSettings):
    """PGD as one immutable value: ``x_{k+1} = P(x_k + step_size *
    sign(grad))`` (l_inf) or ``P(x_k + step_size * grad / ||grad||_2)``
    (``norm='l2'``); ``loss='ce'`` is PGD, ``'bal_ce'`` SegPGD,
    ``'cossim_ce'`` CosPGD. Call it as ``PGD(eps, n_iter)(model, x, y)``;
    :func:`pgd` is a thin wrapper.

    ``bal_ce`` uses ``lambda(t)`` with ``t = 1..n_iter``. Like the APGD
    attacks it reports, per image, the lowest-accuracy iterate (never worse
    than the clean image), which can only make the baseline stronger than
    reporting the last iterate. The tracked objective is the attacked loss
    (``track_loss`` is not used).

    Attributes:
        eps, ignore_index, amp, targeted, class_weights, early_stop,
        result_precision, norm, eot: As in :class:`~.apgd.APGD`.
        n_iter (int): Number of steps.
        loss (str): ``'ce'`` (default), ``'bal_ce'``, ``'cossim_ce'`` or any
            other pixel loss.
        start (StartLike): Where to start; default the clean image, as in
            the baselines' papers (a seed starts at random).
        step_size (float, optional): Step size in [0, 1] units (l_2: the
            l_2 length of a step); ``None`` takes :func:`pgd_step_size`
            (the paper's values).
    """
    loss: str = 'ce'
    step_size: Optional[float] = None

    what = 'pgd'
    random_default = False

    def attack(self, model, x: Tensor, y: Tensor, mask: Optional[Tensor],
               clean: Optional[Prediction], validate: bool,
               legacy: dict) -> AttackResult:
        """See :meth:`~.core.AttackSettings.__call__`."""
        step_size = self.step_size
        if step_size is None:
            step_size = pgd_step_size(self.eps, self.norm)
        step_size = check_radius(step_size, self.norm, 'step_size')
        return self.run(
            lambda p: _pgd_steps(p, step_size),
            model,
            x,
            y,
            mask,
            clean,
            validate,
            legacy,
            track_loss=self.loss)


def pgd(model,
        x: Tensor,
        y: Tensor,
        eps: float,
        n_iter: int,
        *,
        mask: Optional[Tensor] = None,
        clean: Optional[Prediction] = None,
        validate: bool = True,
        **options) -> AttackResult:
    """PGD, SegPGD or CosPGD: a thin wrapper, ``PGD(eps, n_iter,
    **options)(model, x, y, mask=mask, clean=clean, validate=validate)``.

    Args:
        model, x, y, mask, clean, validate: As in
            :meth:`~.apgd.APGD.__call__`.
        eps, n_iter: As in :class:`PGD`.
        **options: The other fields of :class:`PGD` (``step_size``,
            ``loss='ce'``, ``start``, ``ignore_index``, ``amp``,
            ``targeted``, ``class_weights``, ``early_stop``,
            ``result_precision``, ``norm``, ``eot``); ``seed``,
            ``random_start``, ``noise``, ``x_init`` of earlier releases
            (deprecated; use ``start``).

    Returns:
        AttackResult: The lowest-accuracy iterate.
    """
    settings, legacy = PGD.from_options(
        options, 'pgd', ('track_loss', ), eps=eps, n_iter=n_iter)
    return settings(model, x, y, mask, clean, validate, **legacy)


def pgd_train(model,
              x: Tensor,
              y: Tensor,
              eps: float,
              steps: int,
              *,
              mask: Optional[Tensor] = None,
              **options) -> Tuple[Tensor, List[float]]:
    """PGD for adversarial training (docs/training.md).

    ``steps`` sign-gradient steps, returning the **last** iterate as
    Madry-style adversarial training does; no clean or final evaluation, so
    the cost is exactly ``steps`` forward + input-backward passes.

    Args:
        model, x, y, eps, mask: As in :func:`pgd`.
        steps (int): Number of steps ``k`` (AT^k).
        **options: Fields of :class:`PGD`: ``loss`` (default ``'ce'``),
            ``ignore_index``, ``amp``, ``norm``, ``step_size`` (default
            ``2.5 * eps / steps``), ``start`` (default ``None``, the clean
            image; a seed starts uniformly at random in the ball); ``seed``,
            ``random_start`` of earlier releases (deprecated; use
            ``start``).

    Returns:
        tuple: ``(x_adv, losses)`` with the per-step mean objective over the
        batch (a list of ``steps`` floats).
    """
    settings, legacy = PGD.from_options(
        options,
        'pgd_train', ('n_iter', 'targeted', 'class_weights', 'early_stop',
                      'track_loss', 'result_precision', 'eot'),
        eps=eps,
        n_iter=steps)
    start = start_from_legacy(settings.start, legacy, False, 'pgd_train')
    problem = AttackProblem.create(
        model,
        x,
        y,
        eps,
        steps,
        settings.loss,
        start=None if start is DEFAULT else start,
        ignore_index=settings.ignore_index,
        mask=mask,
        amp=settings.amp,
        norm=settings.norm)
    step_size = settings.step_size
    if step_size is None:
        step_size = 2.5 * problem.eps / problem.n_iter
    ball = problem.ball(problem.eps)
    x_adv = problem.start_point(ball)
    losses = []
    for k in range(problem.n_iter):
        ev = problem.obj.evaluate(
            x_adv, step=k + 1, total_steps=problem.n_iter)
        losses.append(ev.loss.mean())
        x_adv = ball.project(x_adv + step_size * ball.ascent(ev.grad))
    # one read-back for all steps (and the non-finite check)
    problem.obj.check()
    return x_adv, torch.stack(losses).tolist()
