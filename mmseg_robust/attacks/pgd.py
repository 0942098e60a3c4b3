"""Fixed-step l_inf PGD and its segmentation variants (baselines).

``loss='ce'`` is PGD (Madry et al.), ``loss='bal_ce'`` is SegPGD (Gu et al.
2022) and ``loss='cossim_ce'`` is CosPGD (Agnihotri and Keuper 2023).
"""
import math
from typing import Optional, Union

import torch
from torch import Tensor

from .apgd import (_Best, _bounds, _clean_eval, _finish, _prepare, _project,
                   _start_point)
from .core import AttackResult, SeedLike, Timer, check_eps

__all__ = ['pgd', 'pgd_train', 'pgd_step_size', 'PAPER_PGD_STEP_SIZES']

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


def pgd_step_size(eps: float) -> float:
    """The paper's PGD step size for ``eps`` (a fraction, e.g. ``4/255``).

    Table values are used where they exist; between them the step size is
    interpolated linearly in eps, below the table it scales with eps, and
    above it the last segment is extended (16/255 -> 7e-3).
    """
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


def pgd(model,
        x: Tensor,
        y: Tensor,
        eps: float,
        n_iter: int,
        step_size: Optional[float] = None,
        loss: str = 'ce',
        random_start: bool = False,
        seed: SeedLike = 0,
        ignore_index: int = 255,
        x_init: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        amp: Union[bool, torch.dtype] = False,
        targeted: bool = False,
        class_weights: Optional[Tensor] = None,
        early_stop: bool = True,
        clean: Optional[tuple] = None,
        noise: Optional[Tensor] = None) -> AttackResult:
    """l_inf PGD: ``x_{k+1} = P(x_k + step_size * sign(grad))``.

    ``bal_ce`` uses ``lambda(t)`` with ``t = 1..n_iter``. Like the APGD
    attacks it reports, per image, the lowest-accuracy iterate (never worse
    than the clean image), which can only make the baseline stronger than
    reporting the last iterate.

    Args:
        model, x, y, eps, ignore_index, seed, x_init, mask, amp, targeted,
        class_weights, early_stop, clean: As in :func:`apgd`.
        n_iter (int): Number of steps.
        step_size (float, optional): Step size in [0, 1] units; ``None``
            takes :func:`pgd_step_size` (the paper's values).
        loss (str): ``'ce'`` (PGD), ``'bal_ce'`` (SegPGD), ``'cossim_ce'``
            (CosPGD) or any other pixel loss.
        random_start (bool): Start uniformly at random in the ball.
        noise (Tensor, optional): Uniform [-1, 1] random-start noise.

    Returns:
        AttackResult: The lowest-accuracy iterate.
    """
    with Timer() as timer:
        obj, x, eps, n_iter, mask = _prepare(model, x, y, eps, n_iter, loss,
                                             ignore_index, targeted, amp,
                                             class_weights, mask)
        if step_size is None:
            step_size = pgd_step_size(eps)
        step_size = check_eps(step_size, 'step_size')
        clean_pred, clean_correct = _clean_eval(obj, x, clean)
        active = clean_correct > 0 if early_stop else obj.n_valid > 0
        best = None
        B = x.shape[0]
        iters = torch.zeros(B, dtype=torch.long, device=x.device)
        best_loss = torch.full((B, ), float('nan'), device=x.device)
        if eps > 0 and bool(active.any()):
            lower, upper = _bounds(x, eps, mask)
            x_adv = _start_point(x, eps, lower, upper, x_init, random_start,
                                 noise, seed)
            best = _Best(x, clean_pred, clean_correct)
            all_idx = torch.arange(B, device=x.device)
            first = True
            # n_iter gradient steps; the last iterate is only evaluated
            for k in range(n_iter + 1):
                ia = all_idx[active]
                if ia.numel() == 0:
                    break
                full = ia.numel() == B  # no indexed copies needed
                xa = x_adv if full else x_adv[ia]
                need_grad = k < n_iter
                l, _, g, p, c = obj.evaluate(
                    xa,
                    ia,
                    step=min(k + 1, n_iter),
                    total_steps=n_iter,
                    need_grad=need_grad)
                if first:
                    obj.warn_zero_grad(g, c, ia)
                    # the starting point counts even if worse than clean
                    best.x[ia], best.pred[ia], best.correct[ia] = xa, p, c
                    first = False
                else:
                    best.update(ia, xa, p, c)
                best_loss[ia] = torch.fmax(best_loss[ia], l)
                if early_stop:
                    active = active & (best.correct > 0)
                if need_grad:
                    if full:  # a fresh tensor; xa was copied into best
                        x_adv = _project(xa + step_size * g.sign(), lower,
                                         upper)
                    else:
                        x_adv[ia] = _project(xa + step_size * g.sign(),
                                             lower[ia], upper[ia])
                    iters[ia] += 1
    return _finish(x, clean_pred, clean_correct, best, obj, best_loss, iters,
                   timer)


def pgd_train(model,
              x: Tensor,
              y: Tensor,
              eps: float,
              steps: int,
              step_size: Optional[float] = None,
              loss: str = 'ce',
              random_start: bool = False,
              seed: SeedLike = 0,
              ignore_index: int = 255,
              mask: Optional[Tensor] = None,
              amp: Union[bool, torch.dtype] = False):
    """PGD for adversarial training (SPEC section 7).

    ``steps`` sign-gradient steps, returning the **last** iterate as
    Madry-style adversarial training does; no clean or final evaluation, so
    the cost is exactly ``steps`` forward + input-backward passes.

    Args:
        model, x, y, eps, loss, seed, ignore_index, mask, amp: As in
            :func:`pgd`.
        steps (int): Number of steps ``k`` (AT^k).
        step_size (float, optional): Defaults to ``2.5 * eps / steps``.
        random_start (bool): Start uniformly at random in the ball.

    Returns:
        tuple: ``(x_adv, losses)`` with the per-step mean objective over the
        batch (a list of ``steps`` floats).
    """
    obj, x, eps, steps, mask = _prepare(model, x, y, eps, steps, loss,
                                        ignore_index, False, amp, None, mask)
    if step_size is None:
        step_size = 2.5 * eps / steps
    lower, upper = _bounds(x, eps, mask)
    x_adv = _start_point(x, eps, lower, upper, None, random_start, None,
                         seed)
    idx = torch.arange(x.shape[0], device=x.device)
    losses = []
    for k in range(steps):
        value, _, grad, _, _ = obj.evaluate(
            x_adv, idx, step=k + 1, total_steps=steps)
        losses.append(float(value.mean()))
        x_adv = _project(x_adv + step_size * grad.sign(), lower, upper)
    return x_adv, losses
