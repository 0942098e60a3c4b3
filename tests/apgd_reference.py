"""A literal single-image APGD reference for the tests, written from
docs/attacks.md (with :func:`reference_checkpoints`, its step-size
checkpoints, and :data:`SPEC_TRACKED`, its tracked objectives)."""
from fractions import Fraction
from math import ceil

import torch

from mmseg_robust.attacks import pixel_loss


def reference_checkpoints(n_iter):
    """``ceil(p_j * n)`` with exact rational arithmetic."""
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt > 1:
            break
        p.append(nxt)
    return sorted({ceil(q * n_iter) for q in p[1:]} - {0})


#: docs/attacks.md: the tracked objective per attacked loss (CE for the masked,
#: balanced and JS losses, the loss itself for mask_sph)
SPEC_TRACKED = {
    'mask_ce': 'ce',
    'bal_ce': 'ce',
    'js': 'ce',
    'mask_ce_bal': 'ce',
    'mask_sph': 'mask_sph',
    'ce': 'ce',
    'cossim_ce': 'ce',
    'cos': 'cos'
}


def reference_apgd(model, x, y, eps, n_iter, loss, x0, ignore=255, track=None):
    """APGD on ONE image (batch of 1), written literally from docs/attacks.md.

    The step direction follows ``loss``; conditions (a), (b) and the restart
    point follow the tracked objective ``track`` (default: the documented
    choice for ``loss``). Returns the lowest-accuracy point of the run (of
    equally accurate points the one with the higher tracked objective) and
    its correct count.
    """
    track = SPEC_TRACKED[loss] if track is None else track
    lower = (x - eps).clamp(0, 1)
    upper = (x + eps).clamp(0, 1)

    def proj(z):
        return torch.max(torch.min(z, upper), lower)

    def evaluate(z, t):
        z = z.clone().requires_grad_(True)
        logits = model(z).float()
        objective = pixel_loss(
            loss, logits, y, ignore, step=t,
            total_steps=n_iter).flatten(1).mean(1)
        g, = torch.autograd.grad(objective.sum(), z)
        tracked = pixel_loss(
            track, logits.detach(), y, ignore, step=t,
            total_steps=n_iter).flatten(1).mean(1)
        correct = int(((logits.argmax(1) == y) & (y != ignore)).sum())
        return tracked.item(), g, correct

    checkpoints = set(reference_checkpoints(n_iter))
    eta = 2 * eps
    xk, x_prev = x0.clone(), x0.clone()
    fk, gk, ck = evaluate(x0, 1)
    x_low, c_low, f_low = x0.clone(), ck, fk
    f_max, x_max, g_max = fk, x0.clone(), gk
    increases, last, reduced_last, f_max_last = 0, 0, False, f_max
    for k in range(n_iter):
        if c_low == 0:
            break
        a = 1.0 if k == 0 else 0.75
        z = proj(xk + eta * gk.sign())
        xn = proj(xk + a * (z - xk) + (1 - a) * (xk - x_prev))
        x_prev, xk = xk, xn
        fn, gn, cn = evaluate(xn, min(k + 2, n_iter))
        increases += int(fn > fk)
        fk, gk = fn, gn
        if fn > f_max:
            f_max, x_max, g_max = fn, xn.clone(), gn
        if cn < c_low or (cn == c_low and fn > f_low):
            c_low, x_low, f_low = cn, xn.clone(), fn
        if k + 1 in checkpoints and k + 1 < n_iter:
            cond_a = increases < 0.75 * (k + 1 - last)
            cond_b = (not reduced_last) and f_max <= f_max_last
            reduce = (cond_a or cond_b) and c_low > 0
            if reduce:
                eta /= 2
                xk, x_prev, gk, fk = x_max.clone(), x_max.clone(), g_max, f_max
            reduced_last, f_max_last = reduce, f_max
            increases, last = 0, k + 1
    return x_low, c_low
