"""APGD for segmentation (SPEC section 3) and its progressive radius
reduction, red-eps (SPEC section 4).

Every image of a batch runs its own APGD: its own step size, checkpoints
decisions, best points and early stop. Images that are finished are dropped
from the forward passes, so a batch costs what its unfinished images cost.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .core import (AttackResult, Objective, SeedLike, Timer,
                   apgd_checkpoints, check_eps, check_images, check_n_iter,
                   default_tracked, start_noise, warn_if_training)

__all__ = ['apgd', 'apgd_red_eps', 'red_eps_schedule']

#: Momentum of APGD after the first step.
MOMENTUM = 0.75
#: Condition (a): the step size is halved if fewer than this fraction of
#: the steps since the last checkpoint increased the objective.
RHO = 0.75


class _Best:
    """The lowest-accuracy point seen so far, per image."""

    def __init__(self, x: Tensor, pred: Tensor, correct: Tensor):
        self.x = x.clone()
        self.pred = pred.clone()
        self.correct = correct.clone()

    def update(self, idx: Tensor, x: Tensor, pred: Tensor,
               correct: Tensor) -> Tensor:
        """Keep the points of images ``idx`` that are strictly better.

        Strictly lower only: ties keep the earlier point, which makes the
        result independent of how long broken images keep running (keeping
        the later or the higher-objective point instead measured the same,
        docs/benchmarks.md).

        Returns:
            Tensor: bool mask over ``idx`` of the images that improved.
        """
        better = correct < self.correct[idx]
        if bool(better.any()):
            sel = idx[better]
            self.x[sel] = x[better]
            self.pred[sel] = pred[better]
            self.correct[sel] = correct[better]
        return better


def _bounds(x: Tensor, eps: float,
            mask: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Box of the l_inf ball around ``x`` intersected with [0, 1]; masked-out
    pixels (padding) are pinned to their value."""
    lower = (x - eps).clamp_(0.0, 1.0)
    upper = (x + eps).clamp_(0.0, 1.0)
    if mask is not None:
        lower = torch.where(mask, lower, x)
        upper = torch.where(mask, upper, x)
    return lower, upper


def _project(z: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    return torch.maximum(torch.minimum(z, upper), lower)


def _start_point(x: Tensor, eps: float, lower: Tensor, upper: Tensor,
                 x_init: Optional[Tensor], random_start: bool,
                 noise: Optional[Tensor], seed: SeedLike) -> Tensor:
    """First iterate: ``x_init`` or a seeded uniform random start, projected
    onto the feasible set, else the clean image."""
    if x_init is not None:
        return _project(x_init.detach().to(x), lower, upper)
    if random_start:
        if noise is None:
            noise = start_noise(x, seed)
        return _project(x + eps * noise, lower, upper)
    return x.clone()


def _run_apgd(obj: Objective,
              x0: Tensor,
              lower: Tensor,
              upper: Tensor,
              eps: float,
              n_iter: int,
              active: Tensor,
              early_stop: bool = True,
              fallback: Optional[tuple] = None):
    """One APGD run from ``x0`` (already inside the box).

    The step-size control (conditions (a) and (b)) and the restart point
    follow the *tracked* objective of ``obj`` (SPEC section 3); the step
    direction is the gradient of the attacked loss; the output is the
    lowest-accuracy point.

    Args:
        obj: The objective.
        x0: ``(B, C, H, W)`` starting points.
        lower, upper: The feasible box.
        eps: Radius of this run (sets the initial step size ``2 * eps``).
        n_iter: Number of iterations.
        active: ``(B,)`` bool, images to attack; the others keep ``x0``.
        early_stop: Stop an image once no valid pixel is correct.
        fallback: ``(x, pred, correct)`` reported for images not attacked
            (the clean images).

    Returns:
        tuple: ``(_Best, best tracked objective (B,), iterations run (B,))``.
    """
    B = x0.shape[0]
    device = x0.device
    all_idx = torch.arange(B, device=device)
    iters = torch.zeros(B, dtype=torch.long, device=device)
    ia = all_idx[active]

    # evaluate the starting point of the images to attack
    track = torch.full((B, ), -float('inf'), device=device)
    grad = torch.zeros_like(x0)
    x_fb, pred_fb, correct_fb = fallback
    best = _Best(x_fb, pred_fb, correct_fb)
    if ia.numel():
        ev = obj.evaluate(x0[ia], ia, step=1, total_steps=n_iter)
        track[ia] = ev.tracked
        grad[ia] = ev.grad
        obj.warn_zero_grad(ev.grad, ev.correct, ia)
        # the starting point is where the run's tracking begins
        best.x[ia], best.pred[ia], best.correct[ia] = x0[ia], ev.pred, \
            ev.correct
        del ev
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
        z = _project(xa + st * g_a.sign(), lo, up)
        x_new = _project(xa + a * (z - xa) + (1 - a) * (xa - xp), lo, up)
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
        best.update(ia, x_new, ev.pred, ev.correct)
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


def _prepare(model, x, y, eps, n_iter, loss, ignore_index, targeted, amp,
             class_weights, mask, min_iter=1, track=None):
    warn_if_training(model)
    eps = check_eps(eps)
    n_iter = check_n_iter(n_iter, min_iter)
    mask = check_images(x, y, mask)
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
    return obj, x, eps, n_iter, mask


def _track(loss: str, track_loss: Optional[str]) -> str:
    return default_tracked(loss) if track_loss is None else track_loss


def _clean_eval(obj: Objective, x: Tensor, clean: Optional[tuple]):
    """Predictions and correct counts at the clean images."""
    if clean is not None:
        pred, correct = clean
        return pred.to(x.device), correct.to(x.device)
    return obj.predict(x, torch.arange(x.shape[0], device=x.device))


def _finish(x: Tensor, clean_pred: Tensor, clean_correct: Tensor,
            best: Optional[_Best], obj: Objective, loss: Tensor,
            iters: Tensor, timer: Timer, **extra) -> AttackResult:
    """Result = the attack's lowest-accuracy point unless the clean image is
    strictly better (so an attack never reports more than clean accuracy)."""
    if best is None:
        best = _Best(x, clean_pred, clean_correct)
    else:
        use_clean = clean_correct < best.correct
        if bool(use_clean.any()):
            best.x[use_clean] = x[use_clean]
            best.pred[use_clean] = clean_pred[use_clean]
            best.correct[use_clean] = clean_correct[use_clean]
    return AttackResult(
        x_adv=best.x,
        pred=best.pred,
        correct=best.correct,
        valid=obj.n_valid.clone(),
        loss=loss,
        n_iter=iters,
        n_evals=obj.n_evals,
        time=timer.elapsed if hasattr(timer, 'elapsed') else 0.0,
        extra=extra)


def apgd(model,
         x: Tensor,
         y: Tensor,
         eps: float,
         n_iter: int = 100,
         loss: str = 'mask_ce',
         ignore_index: int = 255,
         random_start: bool = True,
         seed: SeedLike = 0,
         x_init: Optional[Tensor] = None,
         mask: Optional[Tensor] = None,
         amp: Union[bool, torch.dtype] = False,
         targeted: bool = False,
         class_weights: Optional[Tensor] = None,
         early_stop: bool = True,
         clean: Optional[tuple] = None,
         noise: Optional[Tensor] = None,
         track_loss: Optional[str] = None) -> AttackResult:
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
        random_start (bool): Start uniformly at random in the eps-ball.
        seed (int | Sequence[int]): Seed of the random start, or one seed per
            image (independent of batch composition).
        x_init (Tensor, optional): Starting point instead of ``x`` (projected
            onto the ball; no random noise is added).
        mask (Tensor, optional): ``(B, H, W)`` or ``(B, 1, H, W)`` bool; only
            pixels where it is True are perturbed (e.g. not padding).
        amp (bool | torch.dtype): Autocast the model calls.
        targeted (bool): Minimise CE to the labels ``y`` instead.
        class_weights (Tensor, optional): For ``loss='mask_ce_bal'``.
        early_stop (bool): Stop an image once all its valid pixels are
            misclassified.
        clean (tuple, optional): Precomputed ``(pred, correct)`` at ``x``.
        noise (Tensor, optional): Uniform [-1, 1] random-start noise to use
            instead of drawing it from ``seed``.
        track_loss (str, optional): Loss whose pixel mean drives the
            step-size control and the restart point (SPEC section 3);
            ``None`` takes :data:`TRACKED_DEFAULTS` (CE for the masked,
            balanced and JS losses, the loss itself for ``mask_sph``); give
            ``loss``'s own name to track the attacked loss.

    Returns:
        AttackResult: The lowest-accuracy point found (or ``x`` if nothing
        beats the clean image); ``loss`` holds the best tracked objective.
    """
    with Timer() as timer:
        obj, x, eps, n_iter, mask = _prepare(
            model, x, y, eps, n_iter, loss, ignore_index, targeted, amp,
            class_weights, mask, track=_track(loss, track_loss))
        clean_pred, clean_correct = _clean_eval(obj, x, clean)
        active = clean_correct > 0 if early_stop else obj.n_valid > 0
        best, best_loss, iters = None, None, None
        if eps > 0 and bool(active.any()):
            lower, upper = _bounds(x, eps, mask)
            x0 = _start_point(x, eps, lower, upper, x_init, random_start,
                              noise, seed)
            best, best_loss, iters = _run_apgd(
                obj, x0, lower, upper, eps, n_iter, active, early_stop,
                (x, clean_pred, clean_correct))
    return _finish(x, clean_pred, clean_correct, best, obj, best_loss, iters,
                   timer)


def red_eps_schedule(eps: float, n_iter: int) -> Sequence[Tuple[float, int]]:
    """Radii and iterations of the three red-eps runs (SPEC section 4).

    Iterations split 3:3:4 as ``[int(0.3 n), int(0.3 n), rest]``; each run
    gets at least one iteration (only matters for ``n_iter = 3``).
    """
    n_iter = check_n_iter(n_iter, 3, 'n_iter for red-eps APGD')
    first = max(int(0.3 * n_iter), 1)
    return ((2.0 * eps, first), (1.5 * eps, first),
            (eps, n_iter - 2 * first))


def apgd_red_eps(model,
                 x: Tensor,
                 y: Tensor,
                 eps: float,
                 n_iter: int = 300,
                 loss: str = 'mask_ce',
                 ignore_index: int = 255,
                 random_start: bool = True,
                 seed: SeedLike = 0,
                 x_init: Optional[Tensor] = None,
                 mask: Optional[Tensor] = None,
                 amp: Union[bool, torch.dtype] = False,
                 targeted: bool = False,
                 class_weights: Optional[Tensor] = None,
                 early_stop: bool = True,
                 clean: Optional[tuple] = None,
                 noise: Optional[Tensor] = None,
                 track_loss: Optional[str] = None) -> AttackResult:
    """APGD with progressive radius reduction (red-eps, SPEC section 4).

    Three APGD runs at radii ``2 eps``, ``1.5 eps`` and ``eps`` with
    ``n_iter`` split 3:3:4. Each run starts from the previous run's
    lowest-accuracy point projected onto the next ball; only the first run
    uses a random start. The result is the lowest-accuracy point of the last
    run (inside the eps-ball), or ``x`` if the clean image is better.

    Arguments are those of :func:`apgd` (``track_loss`` included);
    ``n_iter`` must be at least 3. ``noise`` optionally gives the uniform
    [-1, 1] random-start noise; ``x_init`` replaces the random start of the
    first run.
    """
    if n_iter is not None and not isinstance(n_iter, bool) and \
            isinstance(n_iter, int) and n_iter < 3:
        raise ValueError(
            f'red-eps APGD splits n_iter over three radii and needs '
            f'n_iter >= 3, got {n_iter}; use apgd() for shorter runs')
    with Timer() as timer:
        obj, x, eps, n_iter, mask = _prepare(
            model, x, y, eps, n_iter, loss, ignore_index, targeted, amp,
            class_weights, mask, 3, track=_track(loss, track_loss))
        clean_pred, clean_correct = _clean_eval(obj, x, clean)
        active = clean_correct > 0 if early_stop else obj.n_valid > 0
        best, best_loss = None, None
        iters = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if eps > 0 and bool(active.any()):
            start = x_init  # later stages start from the previous best
            for stage, (radius, n) in enumerate(red_eps_schedule(eps,
                                                                 n_iter)):
                lower, upper = _bounds(x, radius, mask)
                x0 = _start_point(x, radius, lower, upper, start,
                                  random_start and stage == 0, noise, seed)
                # only the last stage's points count (smaller radius): drop
                # the previous stage's state before this one allocates its own
                start = best = None
                best, best_loss, it = _run_apgd(
                    obj, x0, lower, upper, radius, n, active, early_stop,
                    (x, clean_pred, clean_correct))
                iters += it
                start = best.x
    return _finish(x, clean_pred, clean_correct, best, obj, best_loss, iters,
                   timer)
