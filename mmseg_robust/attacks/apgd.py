"""APGD for segmentation and its progressive radius reduction, red-eps
(docs/attacks.md; the paper's Section 3).

Every image of a batch runs its own APGD: its own step size, checkpoint
decisions, best points and early stop. Images that are finished are
dropped from the forward passes, so a batch costs what its unfinished
images cost.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .checks import check_n_iter
from .core import (_DEFAULT, AttackProblem, AttackResult, Prediction,
                   StartLike, WorstCase, default_tracked, project,
                   run_attack_loop, start_from_legacy)

__all__ = [
    'apgd', 'apgd_red_eps', 'red_eps_schedule', 'apgd_checkpoints', 'apgd_run'
]

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


def apgd_run(problem: AttackProblem, x0: Tensor, lower: Tensor, upper: Tensor,
             eps: float, n_iter: int) -> Tuple[WorstCase, Tensor, Tensor]:
    """One APGD run from ``x0`` (already inside the box).

    The step-size control (conditions (a) and (b)) and the restart point
    follow the *tracked* objective of the problem's objective
    (docs/attacks.md); the step direction is the gradient of the attacked
    loss; the output is the lowest-accuracy point (of equally accurate
    points the one with the higher tracked objective).

    Args:
        problem: The attack problem (objective, images to attack, clean
            predictions reported for the others, early stop).
        x0: ``(B, C, H, W)`` starting points.
        lower, upper: The feasible box.
        eps: Radius of this run (sets the initial step size ``2 * eps``).
        n_iter: Number of iterations.

    Returns:
        tuple: ``(WorstCase, best tracked objective (B,), iterations run
        (B,))``.
    """
    obj, active, early_stop = problem.obj, problem.active, \
        problem.early_stop
    B = x0.shape[0]
    device = x0.device
    all_idx = torch.arange(B, device=device)
    iters = torch.zeros(B, dtype=torch.long, device=device)
    ia = all_idx[active]

    # evaluate the starting point of the images to attack
    track = torch.full((B, ), -float('inf'), device=device)
    grad = torch.zeros_like(x0)
    best = problem.fallback()
    if ia.numel():
        ev = obj.evaluate(x0[ia], ia, step=1, total_steps=n_iter)
        track[ia] = ev.tracked
        grad[ia] = ev.grad
        obj.warn_zero_grad(ev.grad, ev.correct, ia)
        # the starting point is where the run's tracking begins
        best.x[ia], best.pred[ia], best.correct[ia] = x0[ia], ev.pred, \
            ev.correct
        del ev
    # of equally accurate points the output keeps the one with the higher
    # tracked objective (WorstCase.update)
    best.score = track.clone()
    if early_stop:
        active = active & (best.correct > 0)

    x_adv = x0  # callers hand x0 over (it is not used after this call)
    x_prev = x0.clone()
    step = torch.full((B, ), 2.0 * eps, device=device)
    best_track = track.clone()
    x_best_track = x0.clone()
    grad_best = grad.clone()
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
        ia = all_idx[active]
        if ia.numel() == 0:
            break
        a = 1.0 if k == 0 else MOMENTUM
        # every image still running (the common case): work on the state
        # tensors themselves instead of indexed copies of them
        full = ia.numel() == B
        if full:
            xa, lo, up, g_a, xp = x_adv, lower, upper, grad, x_prev
            st = step.view(-1, 1, 1, 1)
        else:
            xa, lo, up = x_adv[ia], lower[ia], upper[ia]
            g_a, xp = grad[ia], x_prev[ia]
            st = step[ia].view(-1, 1, 1, 1)
        z = project(xa + st * g_a.sign(), lo, up)
        x_new = project(xa + a * (z - xa) + (1 - a) * (xa - xp), lo, up)
        if full:
            # x_new is a fresh tensor and nothing else refers to the old
            # x_prev, so rebinding replaces the two copies
            x_prev, x_adv = x_adv, x_new
        else:
            x_prev[ia] = xa
            x_adv[ia] = x_new
        # free the step's temporaries before the forward pass allocates
        del z, xa, xp, g_a
        iters[ia] += 1

        need_grad = k + 1 < n_iter
        ev = obj.evaluate(
            x_new,
            ia,
            step=min(k + 2, n_iter),
            total_steps=n_iter,
            need_grad=need_grad)
        t = ev.tracked
        n_increase[ia] += (t > track[ia]).float()
        track[ia] = t
        g = ev.grad
        if g is not None:
            if full:
                # fresh from autograd and referenced nowhere else; made
                # contiguous because autograd may return an expanded
                # (stride-0) tensor, which must not be written in place
                grad = g.contiguous()
            else:
                grad[ia] = g
        improved = t > best_track[ia]
        if bool(improved.any()):
            sel = ia[improved]
            best_track[sel] = t[improved]
            x_best_track[sel] = x_new[improved]
            if g is not None:
                grad_best[sel] = g[improved]
        best.update(ia, x_new, ev.pred, ev.correct, t)
        del ev, g
        if early_stop:
            active = active & (best.correct > 0)

        if (k + 1) in checkpoints and need_grad:
            since = k + 1 - last_ckpt
            cond_a = n_increase < RHO * since
            cond_b = (~reduced_last) & (best_track <= best_track_at_ckpt)
            reduce = (cond_a | cond_b) & active
            if bool(reduce.any()):
                step[reduce] /= 2.0
                # restart from the highest-objective point, no momentum
                x_adv[reduce] = x_best_track[reduce]
                x_prev[reduce] = x_best_track[reduce]
                grad[reduce] = grad_best[reduce]
                track[reduce] = best_track[reduce]
            reduced_last = reduce
            best_track_at_ckpt = best_track.clone()
            n_increase.zero_()
            last_ckpt = k + 1
    best_track[best_track == -float('inf')] = float('nan')
    return best, best_track, iters


def _apgd_steps(problem: AttackProblem):
    lower, upper = problem.box(problem.eps)
    x0 = problem.start_point(problem.eps, lower, upper)
    return apgd_run(problem, x0, lower, upper, problem.eps, problem.n_iter)


def _schedule(eps: float, n_iter: int) -> Sequence[Tuple[float, int]]:
    first = max(int(0.3 * n_iter), 1)
    return ((2.0 * eps, first), (1.5 * eps, first), (eps, n_iter - 2 * first))


def _red_eps_steps(problem: AttackProblem):
    iters = torch.zeros(
        problem.x.shape[0], dtype=torch.long, device=problem.x.device)
    start = problem.start  # later stages start from the previous best
    best = tracked = None
    for radius, n in _schedule(problem.eps, problem.n_iter):
        lower, upper = problem.box(radius)
        x0 = problem.start_point(radius, lower, upper, start)
        # only the last stage's points count (smaller radius): drop the
        # previous stage's state before this one allocates its own
        start = best = tracked = None
        best, tracked, it = apgd_run(problem, x0, lower, upper, radius, n)
        iters += it
        start = best.x
    return best, tracked, iters


def _attack(steps,
            what: str,
            random_default: bool,
            model,
            x,
            y,
            eps,
            n_iter,
            loss,
            start,
            legacy,
            clean=None,
            track_loss=None,
            **kwargs) -> AttackResult:
    """Resolve ``start`` and the tracked objective, then run ``steps`` in
    the skeleton (:func:`~.core.run_attack_loop`)."""
    start = start_from_legacy(start, legacy, random_default, what)
    if start is _DEFAULT:
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


def apgd(model,
         x: Tensor,
         y: Tensor,
         eps: float,
         n_iter: int = 100,
         loss: str = 'mask_ce',
         ignore_index: int = 255,
         start: StartLike = _DEFAULT,
         mask: Optional[Tensor] = None,
         amp: Union[bool, torch.dtype] = False,
         targeted: bool = False,
         class_weights: Optional[Tensor] = None,
         early_stop: bool = True,
         clean: Optional[Prediction] = None,
         track_loss: Optional[str] = None,
         validate: bool = True,
         **legacy) -> AttackResult:
    """APGD (l_inf) on a segmentation model with a constant radius.

    Args:
        model: Callable mapping images ``(B, 3, H, W)`` in [0, 1] to logits
            ``(B, K, H', W')`` at label resolution. Put it in eval mode.
        x (Tensor): Clean images in [0, 1].
        y (Tensor): ``(B, H', W')`` labels (targeted: target labels).
        eps (float): l_inf radius as a fraction, e.g. ``8/255``.
        n_iter (int): Iterations (one forward and one input-backward each).
        loss (str): Pixel loss, see :data:`PIXEL_LOSSES`.
        ignore_index (int): Label of ignored pixels.
        start (StartLike): Where to start: a seed (default 0; or one seed per
            image, independent of batch composition) for a uniform random
            start in the ball, ``None`` for the clean image,
            :class:`UniformNoise` or starting points (projected onto the
            ball).
        mask (Tensor, optional): ``(B, H, W)`` or ``(B, 1, H, W)`` bool; only
            pixels where it is True are perturbed (e.g. not padding).
        amp (bool | torch.dtype): Autocast the model calls.
        targeted (bool): Minimise CE to the labels ``y`` instead.
        class_weights (Tensor, optional): For ``loss='mask_ce_bal'``.
        early_stop (bool): Stop an image once all its valid pixels are
            misclassified.
        clean (Prediction, optional): Precomputed ``(pred, correct)`` at
            ``x``.
        track_loss (str, optional): Loss whose pixel mean drives the
            step-size control and the restart point (docs/attacks.md);
            ``None`` takes :data:`TRACKED_DEFAULTS` (CE for the masked,
            balanced and JS losses, the loss itself for ``mask_sph``); give
            ``loss``'s own name to track the attacked loss.
        validate (bool): Check the inputs (callers that checked them already,
            such as :class:`SEA`, skip it).
        **legacy: ``seed``, ``random_start``, ``noise``, ``x_init`` of
            earlier releases (deprecated; use ``start``).

    Returns:
        AttackResult: The lowest-accuracy point found (or ``x`` if nothing
        beats the clean image); ``loss`` holds the best tracked objective.
    """
    return _attack(
        _apgd_steps,
        'apgd',
        True,
        model,
        x,
        y,
        eps,
        n_iter,
        loss,
        start,
        legacy,
        validate=validate,
        clean=clean,
        track_loss=track_loss,
        ignore_index=ignore_index,
        mask=mask,
        amp=amp,
        targeted=targeted,
        class_weights=class_weights,
        early_stop=early_stop)


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
                 loss: str = 'mask_ce',
                 ignore_index: int = 255,
                 start: StartLike = _DEFAULT,
                 mask: Optional[Tensor] = None,
                 amp: Union[bool, torch.dtype] = False,
                 targeted: bool = False,
                 class_weights: Optional[Tensor] = None,
                 early_stop: bool = True,
                 clean: Optional[Prediction] = None,
                 track_loss: Optional[str] = None,
                 validate: bool = True,
                 **legacy) -> AttackResult:
    """APGD with progressive radius reduction (red-eps, docs/attacks.md).

    Three APGD runs at radii ``2 eps``, ``1.5 eps`` and ``eps`` with
    ``n_iter`` split 3:3:4. Each run starts from the previous run's
    lowest-accuracy point projected onto the next ball; ``start`` applies
    to the first run (a random start there is drawn in the ``2 eps``
    ball). The result is the lowest-accuracy point of the last run (inside
    the eps-ball), or ``x`` if the clean image is better.

    Arguments are those of :func:`apgd`; ``n_iter`` must be at least 3.
    """
    if validate:
        try:
            check_n_iter(n_iter, 3)
        except ValueError:
            raise ValueError(
                f'red-eps APGD splits n_iter over three radii and needs '
                f'n_iter >= 3, got {n_iter!r}; use apgd() for shorter '
                'runs') from None
    return _attack(
        _red_eps_steps,
        'apgd_red_eps',
        True,
        model,
        x,
        y,
        eps,
        int(n_iter),
        loss,
        start,
        legacy,
        check_iter=False,
        validate=validate,
        clean=clean,
        track_loss=track_loss,
        ignore_index=ignore_index,
        mask=mask,
        amp=amp,
        targeted=targeted,
        class_weights=class_weights,
        early_stop=early_stop)
