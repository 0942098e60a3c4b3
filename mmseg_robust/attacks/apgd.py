"""APGD for segmentation and its progressive radius reduction, red-eps
(docs/attacks.md; the paper's Section 3).

Every image of a batch runs its own APGD: its own step size, checkpoint
decisions, best points and early stop. Images that are finished are
dropped from the forward passes, so a batch costs what its unfinished
images cost.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .checks import check_n_iter
from .core import (AttackProblem, AttackResult, AttackSettings, Ball,
                   Prediction, WorstCase, is_sync_point, where_rows)

__all__ = [
    'APGD', 'apgd', 'apgd_red_eps', 'red_eps_schedule', 'apgd_checkpoints',
    'apgd_run', 'SCHEDULES'
]

#: APGD's radius schedules: one radius, or red-eps (docs/attacks.md).
SCHEDULES = ('constant', 'red_eps')

#: Momentum of APGD after the first step.
MOMENTUM = 0.75
#: Condition (a): the step size is halved if fewer than this fraction of
#: the steps since the last checkpoint increased the objective.
RHO = 0.75


def apgd_checkpoints(n_iter: int) -> Sequence[int]:
    """APGD checkpoints ``w_j = ceil(p_j * n_iter)`` (docs/attacks.md).

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


def apgd_run(problem: AttackProblem, x0: Tensor, ball: Ball, eps: float,
             n_iter: int) -> Tuple[WorstCase, Tensor, Tensor]:
    """One APGD run from ``x0`` (already inside the box).

    The step-size control (conditions (a) and (b)) and the restart point
    follow the *tracked* objective of the problem's objective
    (docs/attacks.md); the step direction is the gradient of the attacked
    loss; the output is the lowest-accuracy point (of equally accurate
    points the one with the higher tracked objective).

    The whole batch keeps its shape for the whole run: an image that is
    done (not attacked, or early-stopped) is still evaluated but its state
    no longer changes (``torch.where``), so no iteration reads device
    memory on the host. Every :data:`~.core.SYNC_EVERY` iterations one read
    ends the run if no image is left and raises on non-finite logits
    (docs/attacks.md, "Host synchronisation").

    Args:
        problem: The attack problem (objective, images to attack, clean
            predictions reported for the others, early stop).
        x0: ``(B, C, H, W)`` starting points.
        ball: The feasible set (l_inf: sign steps; l_2: steps along the
            normalised gradient, Croce and Hein 2020).
        eps: Radius of this run (sets the initial step size ``2 * eps``).
        n_iter: Number of iterations.

    Returns:
        tuple: ``(WorstCase, best tracked objective (B,), iterations run
        (B,))``.
    """
    obj, early_stop = problem.obj, problem.early_stop
    attacked = problem.active
    B = x0.shape[0]
    device = x0.device

    # evaluate the starting point; images not attacked keep the clean one
    ev = obj.evaluate(x0, step=1, total_steps=n_iter)
    obj.note_zero_grad(ev.grad, ev.correct, attacked)
    track = torch.where(attacked, ev.tracked, -float('inf'))
    grad = ev.grad
    best = problem.fallback()
    # the starting point is where the run's tracking begins
    best.x = where_rows(attacked, x0, best.x)
    best.correct = torch.where(attacked, ev.correct, best.correct)
    best.pred = None  # known for the returned points only (run_attack_loop)
    # of equally accurate points the output keeps the one with the higher
    # tracked objective (WorstCase.update)
    best.score = track.clone()
    del ev
    active = attacked & (best.correct > 0) if early_stop else attacked
    iters = torch.zeros(B, dtype=torch.long, device=device)

    x_adv = x0  # callers hand x0 over (it is not used after this call)
    x_prev = x0
    step = torch.full((B, ), 2.0 * eps, device=device)
    best_track = track.clone()
    x_best_track = x0
    grad_best = grad
    # checkpoint state
    checkpoints = set(apgd_checkpoints(n_iter))
    last_ckpt = 0
    n_increase = torch.zeros(B, device=device)
    best_track_at_ckpt = best_track.clone()
    # condition (b) may fire at the first checkpoint: the start counts as
    # the last checkpoint, without a reduction (AutoAttack waits one
    # checkpoint; measured the same, docs/benchmarks.md)
    reduced_last = torch.zeros(B, dtype=torch.bool, device=device)

    for k in range(n_iter):
        a = 1.0 if k == 0 else MOMENTUM
        st = step.view(-1, 1, 1, 1)
        z = ball.project(x_adv + st * ball.ascent(grad))
        x_new = ball.project(x_adv + a * (z - x_adv) + (1 - a) *
                             (x_adv - x_prev))
        del z
        # images that are done stay where they are
        x_new = where_rows(active, x_new, x_adv)
        x_prev, x_adv = x_adv, x_new
        iters += active

        need_grad = k + 1 < n_iter
        ev = obj.evaluate(
            x_new,
            step=min(k + 2, n_iter),
            total_steps=n_iter,
            need_grad=need_grad)
        t = ev.tracked
        # the state of images that are done is never read again (active
        # only shrinks within a run), so only what they must keep is masked
        n_increase += ((t > track) & active).float()
        track = t
        if need_grad:
            grad = ev.grad
        improved = (t > best_track) & active
        best_track = torch.where(improved, t, best_track)
        x_best_track = where_rows(improved, x_new, x_best_track)
        if need_grad:
            grad_best = where_rows(improved, grad, grad_best)
        best.update(None, x_new, None, ev.correct, t, where=active)
        del ev
        if early_stop:
            active = active & (best.correct > 0)

        if (k + 1) in checkpoints and need_grad:
            since = k + 1 - last_ckpt
            cond_a = n_increase < RHO * since
            cond_b = (~reduced_last) & (best_track <= best_track_at_ckpt)
            reduce = (cond_a | cond_b) & active
            step = torch.where(reduce, step / 2.0, step)
            # restart from the highest-objective point, no momentum
            x_adv = where_rows(reduce, x_best_track, x_adv)
            x_prev = where_rows(reduce, x_best_track, x_prev)
            grad = where_rows(reduce, grad_best, grad)
            track = torch.where(reduce, best_track, track)
            reduced_last = reduce
            best_track_at_ckpt = best_track
            n_increase = torch.zeros_like(n_increase)
            last_ckpt = k + 1
        if need_grad and is_sync_point(k) and not obj.check(active):
            break
    best_track = torch.where(best_track == -float('inf'),
                             torch.full_like(best_track, float('nan')),
                             best_track)
    return best, best_track, iters


def _apgd_steps(problem: AttackProblem):
    ball = problem.ball(problem.eps)
    return apgd_run(problem, problem.start_point(ball), ball, problem.eps,
                    problem.n_iter)


def _schedule(eps: float, n_iter: int) -> Sequence[Tuple[float, int]]:
    first = max(int(0.3 * n_iter), 1)
    return ((2.0 * eps, first), (1.5 * eps, first), (eps, n_iter - 2 * first))


def _red_eps_steps(problem: AttackProblem):
    iters = torch.zeros(
        problem.x.shape[0], dtype=torch.long, device=problem.x.device)
    start = problem.start  # later stages start from the previous best
    best = tracked = None
    for radius, n in _schedule(problem.eps, problem.n_iter):
        ball = problem.ball(radius)
        x0 = problem.start_point(ball, start)
        # only the last stage's points count (smaller radius): drop the
        # previous stage's state before this one allocates its own
        start = best = tracked = None
        best, tracked, it = apgd_run(problem, x0, ball, radius, n)
        iters += it
        start = best.x
    return best, tracked, iters


@dataclass(frozen=True)
class APGD(AttackSettings):
    """APGD on a segmentation model (Croce and Hein 2020) as one immutable
    value, in the l_inf (default) or the l_2 ball: at a constant radius
    (``schedule='constant'``) or with progressive radius reduction
    (``'red_eps'``, docs/attacks.md: three runs at ``2 eps``, ``1.5 eps``
    and ``eps`` with ``n_iter`` split 3:3:4, each starting from the previous
    run's lowest-accuracy point projected onto the next ball; the result is
    the lowest-accuracy point of the last run). Call it as
    ``APGD(eps, n_iter, loss=...)(model, x, y)``; :func:`apgd` and
    :func:`apgd_red_eps` are thin wrappers.

    Attributes:
        eps (float): Radius: l_inf as a fraction of the pixel range, e.g.
            ``8/255``; l_2 the norm of the perturbation of the [0, 1] image
            (e.g. ``0.5``; docs/attacks.md, "The l2 threat model").
        n_iter (int): Iterations (one forward and one input-backward each;
            red-eps: at least 3).
        loss (str): Pixel loss, see :data:`PIXEL_LOSSES`.
        start (StartLike): Where to start: a seed (default 0; or one seed per
            image, independent of batch composition) for a uniform random
            start in the ball (red-eps: the ``2 eps`` ball), ``None`` for the
            clean image, :class:`UniformNoise` or starting points (projected
            onto the ball).
        ignore_index (int): Label of ignored pixels.
        amp (AmpLike): Precision of the model calls: ``'fp16'``, ``'bf16'``,
            ``True`` (bf16 where the device supports it, else fp16) or
            ``False`` (float32). The input gradient is scaled so that it
            does not underflow (docs/attacks.md, "Precision").
        targeted (bool): Minimise CE to the labels ``y`` instead.
        class_weights (Tensor, optional): For ``loss='mask_ce_bal'``.
        early_stop (bool): Stop an image once all its valid pixels are
            misclassified.
        track_loss (str, optional): Loss whose pixel mean drives the
            step-size control and the restart point (docs/attacks.md);
            ``None`` takes :data:`TRACKED_DEFAULTS` (CE for the masked,
            balanced and JS losses, the loss itself for ``mask_sph``); give
            ``loss``'s own name to track the attacked loss.
        result_precision (str): ``'fp32'`` (default): with ``amp`` the
            returned points are evaluated again in float32, so ``pred`` and
            ``correct`` are float32 predictions; ``'amp'``: as the attack
            saw them.
        norm (str): ``'linf'`` (sign steps, the paper's) or ``'l2'``
            (steps along the l_2-normalised gradient; random starts on the
            sphere of the radius).
        eot (int): Expectation over transformation for randomised models:
            each step's gradient (and objective) is the mean over ``eot``
            forward+backward passes; costs ``eot`` times the passes.
        schedule (str): ``'constant'`` or ``'red_eps'``.
    """
    schedule: str = 'constant'

    @property
    def what(self) -> str:
        return 'apgd_red_eps' if self.schedule == 'red_eps' else 'apgd'

    def attack(self, model, x: Tensor, y: Tensor, mask: Optional[Tensor],
               clean: Optional[Prediction], validate: bool,
               legacy: dict) -> AttackResult:
        """See :meth:`~.core.AttackSettings.__call__`."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, got '
                             f'{self.schedule!r}')
        if self.schedule == 'constant':
            return self.run(_apgd_steps, model, x, y, mask, clean, validate,
                            legacy)
        if validate:
            try:
                check_n_iter(self.n_iter, 3)
            except ValueError:
                raise ValueError(
                    f'red-eps APGD splits n_iter over three radii and needs '
                    f'n_iter >= 3, got {self.n_iter!r}; use apgd() for '
                    'shorter runs') from None
        return self.run(
            _red_eps_steps,
            model,
            x,
            y,
            mask,
            clean,
            validate,
            legacy,
            n_iter=int(self.n_iter),
            check_iter=False)


def apgd(model,
         x: Tensor,
         y: Tensor,
         eps: float,
         n_iter: int = 100,
         *,
         mask: Optional[Tensor] = None,
         clean: Optional[Prediction] = None,
         validate: bool = True,
         **options) -> AttackResult:
    """APGD with a constant radius: a thin wrapper, ``APGD(eps, n_iter,
    **options)(model, x, y, mask=mask, clean=clean, validate=validate)``.

    Args:
        model, x, y, mask, clean, validate: As in :meth:`APGD.__call__`.
        eps, n_iter: As in :class:`APGD`.
        **options: The other fields of :class:`APGD` (``loss='mask_ce'``,
            ``start``, ``ignore_index``, ``amp``, ``targeted``,
            ``class_weights``, ``early_stop``, ``track_loss``,
            ``result_precision``, ``norm``, ``eot``); ``seed``,
            ``random_start``, ``noise``, ``x_init`` of earlier releases
            (deprecated; use ``start``).

    Returns:
        AttackResult: See :meth:`APGD.__call__`.
    """
    settings, legacy = APGD.from_options(
        options, 'apgd', ('schedule', ), eps=eps, n_iter=n_iter)
    return settings(model, x, y, mask, clean, validate, **legacy)


def red_eps_schedule(eps: float, n_iter: int) -> Sequence[Tuple[float, int]]:
    """Radii and iterations of the three red-eps runs (docs/attacks.md).

    Iterations split 3:3:4 as ``[int(0.3 n), int(0.3 n), rest]``; each run
    gets at least one iteration (only matters for ``n_iter = 3``).
    """
    return _schedule(eps, check_n_iter(n_iter, 3, 'n_iter for red-eps APGD'))


def apgd_red_eps(model,
                 x: Tensor,
                 y: Tensor,
                 eps: float,
                 n_iter: int = 300,
                 *,
                 mask: Optional[Tensor] = None,
                 clean: Optional[Prediction] = None,
                 validate: bool = True,
                 **options) -> AttackResult:
    """APGD with progressive radius reduction (red-eps, docs/attacks.md): a
    thin wrapper, ``APGD(eps, n_iter, schedule='red_eps', **options)(model,
    x, y, mask=mask, clean=clean, validate=validate)``.

    Arguments are those of :func:`apgd` (``norm='l2'``: the same schedule
    of l_2 radii); ``n_iter`` must be at least 3.
    """
    settings, legacy = APGD.from_options(
        options,
        'apgd_red_eps', ('schedule', ),
        eps=eps,
        n_iter=n_iter,
        schedule='red_eps')
    return settings(model, x, y, mask, clean, validate, **legacy)
