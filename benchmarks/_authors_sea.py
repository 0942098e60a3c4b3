"""The authors' released SEA, re-implemented from a reading of their code
(for side-by-side strength comparisons only; not used by the package).

The public repository of the paper (``semseg/utils/attacker.py``:
``apgd_train``, ``apgd_largereps``; called from their evaluation scripts
with ``use_rs=True``, ``n_restarts=1`` and ``track_loss='ce-avg'`` for the
masked CE, SegPGD and JS losses, the masked spherical loss tracking
itself). What this re-implementation keeps from that reading, including the
points where it differs from this package (docs/benchmarks.md):

* step size ``2 eps``, momentum 0.75 (1 at the first step); the momentum
  term after a restart is the difference between the restart point and the
  iterate before it (not reset);
* checkpoints every ``k`` iterations, ``k`` starting at ``int(0.22 n)`` and
  shrinking by ``int(0.03 n)`` down to ``int(0.06 n)`` (all at least 1);
  condition (a) counts the steps whose tracked objective rose above the
  previous step's (``<= 0.75 k`` halves the step); condition (b) cannot fire
  at the first checkpoint; a restart moves to the highest-tracked point and
  its stored gradient;
* the output of a run is the lowest-accuracy iterate, ties going to the
  *later* iterate, starting from the random start (never compared with the
  clean image); accuracy counts ignored pixels as correct, except at the
  start point, where they count as wrong (so an iterate replaces the start
  only once it is that much better; ``fix_start_acc=True`` removes this);
* red-eps: 30% / 30% / 40% of the iterations at 2, 1.5, 1 times eps, each
  stage starting from the previous stage's output projected onto the next
  ball, only the first with a random start (uniform in the ball, unseeded);
* SEA: per image the attack output with the lowest pixel accuracy.

Losses follow their definitions (SegPGD's ``lambda = t / (2 T)`` with ``t``
counting from 0 at the start point; JS as a sum of two KL divergences).
"""
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _loss_map(name: str, logits: Tensor, y: Tensor, t: int, n_iter: int,
              weights: Optional[Tensor]) -> Tensor:
    """Per-pixel loss; ``y`` uses -1 for ignored pixels."""
    valid = y >= 0
    safe = y.clamp_min(0)
    ce = F.cross_entropy(logits, safe, reduction='none')
    correct = (logits.max(1)[1] == safe).float().detach()
    if name == 'ce':
        out = ce
    elif name == 'mask_ce':
        out = correct * ce
    elif name == 'mask_ce_bal':
        out = correct * ce * weights.to(logits)[safe]
    elif name == 'bal_ce':
        lam = t / 2 / n_iter
        out = (1 - lam) * correct * ce + lam * (1 - correct) * ce
    elif name == 'js':
        p = F.softmax(logits, 1)
        q = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).float()
        m = (p + q) / 2
        out = (F.kl_div(m.log(), p, reduction='none') +
               F.kl_div(m.log(), q, reduction='none')).sum(1) / 2
    elif name == 'mask_sph':
        u = logits / (logits**2).sum(1, keepdim=True).sqrt()
        out = -correct * u.gather(1, safe[:, None])[:, 0]
    else:
        raise ValueError(name)
    return out * valid


def _img_loss(name, logits, y, t, n_iter, weights):
    return _loss_map(name, logits, y, t, n_iter, weights).flatten(1).mean(1)


def apgd_run(model: Callable,
             x: Tensor,
             y: Tensor,
             eps: float,
             n_iter: int,
             loss: str,
             track: str,
             x_init: Optional[Tensor] = None,
             weights: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None,
             fix_start_acc: bool = False,
             noise: Optional[Tensor] = None) -> Tensor:
    """One APGD run as in their ``apgd_train`` (l_inf); returns the
    lowest-accuracy iterate (``x_best_adv``). ``noise`` (uniform in
    [-1, 1]) replaces the random start's draw."""
    B = x.shape[0]
    if x_init is None:
        if noise is None:
            noise = 2 * torch.rand(x.shape, generator=generator) - 1
        x_adv = (x + eps * noise.to(x)).clamp(0, 1)
    else:
        x_adv = x_init.clone()
    x_adv = x_adv.clamp(0, 1)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    loss_steps = torch.zeros(n_iter, B)
    n_iter_2 = max(int(0.22 * n_iter), 1)
    n_iter_min = max(int(0.06 * n_iter), 1)
    size_decr = max(int(0.03 * n_iter), 1)
    k = n_iter_2
    step = 2 * eps * torch.ones(B, 1, 1, 1)
    counter3 = 0

    def evaluate(z, t, need_grad=True, ignored_correct=True):
        z = z.clone().requires_grad_(True)
        logits = model(z)
        obj = _img_loss(loss, logits, y, t, n_iter, weights)
        g = torch.autograd.grad(obj.sum(), z)[0] if need_grad else None
        with torch.no_grad():
            tr = _img_loss(track, logits.detach(), y, t, n_iter, weights)
            hit = logits.max(1)[1] == y
            if ignored_correct:
                hit = hit | (y < 0)
            acc = hit.float().flatten(1).mean(1)
        return tr, g, acc

    loss_cur, grad, acc = evaluate(x_adv, 0, ignored_correct=fix_start_acc)
    grad_best = grad.clone()
    loss_best = loss_cur.clone()
    loss_best_last = loss_best.clone()
    reduced_last = torch.ones(B)
    x_old = x_adv.clone()
    lo, hi = x - eps, x + eps
    for i in range(n_iter):
        grad2 = x_adv - x_old
        x_old = x_adv.clone()
        a = 0.75 if i > 0 else 1.0
        x1 = torch.min(torch.max(x_adv + step * grad.sign(), lo), hi)
        x1 = x1.clamp(0, 1)
        x1 = torch.min(
            torch.max(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), lo),
            hi).clamp(0, 1)
        x_adv = x1
        need = i < n_iter - 1
        loss_cur, g, avg_acc = evaluate(x_adv, i + 1, need)
        if g is not None:
            grad = g
        upd = avg_acc <= acc
        acc = torch.min(acc, avg_acc)
        x_best_adv[upd] = x_adv[upd]
        loss_steps[i] = loss_cur
        imp = loss_cur > loss_best
        x_best[imp] = x_adv[imp]
        grad_best[imp] = grad[imp]
        loss_best[imp] = loss_cur[imp]
        counter3 += 1
        if counter3 == k:
            t = torch.zeros(B)
            for c in range(k):  # their index wraps at the first check
                t += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
            osc = (t <= k * 0.75).float()
            no_impr = (1 - reduced_last) * (loss_best_last
                                            >= loss_best).float()
            osc = torch.max(osc, no_impr)
            reduced_last = osc.clone()
            loss_best_last = loss_best.clone()
            red = osc > 0
            if bool(red.any()):
                step[red] /= 2.0
                x_adv[red] = x_best[red]
                grad[red] = grad_best[red]
            counter3 = 0
            k = max(k - size_decr, n_iter_min)
    return x_best_adv


def apgd_largereps(model,
                   x,
                   y,
                   eps,
                   n_iter,
                   loss,
                   track,
                   weights=None,
                   generator=None,
                   fix_start_acc=False,
                   noise=None) -> Tensor:
    """Their red-eps: 2, 1.5, 1 times eps for 30%, 30%, 40% of the
    iterations; ``noise`` as in :func:`apgd_run` (first run only)."""
    iters = [int(0.3 * n_iter), int(0.3 * n_iter)]
    iters.append(n_iter - sum(iters))
    x_init = None
    for n, r in zip(iters, (2.0, 1.5, 1.0)):
        radius = r * eps
        if x_init is not None:
            x_init = (x + (x_init - x).clamp(-radius, radius)).clamp(0, 1)
        x_init = apgd_run(model, x, y, radius, n, loss, track, x_init, weights,
                          generator, fix_start_acc, noise)
        noise = None
    return x_init


#: their ensembles: (loss, tracked objective)
AUTHORS_SEA = {
    '2023': (('mask_ce', 'ce'), ('bal_ce', 'ce'), ('js', 'ce'), ('mask_sph',
                                                                 'mask_sph')),
    '2024': (('mask_ce_bal', 'ce'), ('mask_ce', 'ce'), ('js', 'ce')),
}


@torch.no_grad()
def _predict(model, x):
    return model(x).max(1)[1]


def authors_sea(
        model,
        x: Tensor,
        y: Tensor,
        eps: float,
        n_iter: int,
        version: str = '2023',
        weights: Optional[Tensor] = None,
        seed: int = 0,
        cache: Optional[Dict] = None,
        fix_start_acc: bool = False,
        starts: Optional[Callable[[str], Tensor]] = None) -> Dict[str, Tensor]:
    """Their SEA on one batch: ``{attack: pred, 'worst': pred}`` with the
    per-image worst case by pixel accuracy. ``y`` uses 255 for ignored
    pixels. ``cache`` (a dict) reuses runs shared by both versions (given
    the same ``starts`` object, or none). ``starts`` maps an attack's loss to
    its random start's noise (uniform in [-1, 1], e.g. the noise our SEA
    draws for that attack), so that both implementations start alike;
    without it ``seed`` draws the starts."""
    y_ = torch.where(y == 255, torch.full_like(y, -1), y)
    out = {}
    g = torch.Generator().manual_seed(seed)
    for loss, track in AUTHORS_SEA[version]:
        # with given starts a run depends on them: key on the object
        key = (loss, track, eps, n_iter, fix_start_acc, starts)
        if cache is not None and key in cache:
            out[loss] = cache[key]
            continue
        with torch.enable_grad():
            x_adv = apgd_largereps(model, x, y_, eps, n_iter, loss, track,
                                   weights, g, fix_start_acc,
                                   None if starts is None else starts(loss))
        out[loss] = _predict(model, x_adv)
        if cache is not None:
            cache[key] = out[loss]
    valid = y != 255
    preds = torch.stack(list(out.values()))
    correct = ((preds == y[None]) & valid[None]).flatten(2).sum(2)
    idx = correct.argmin(0)
    out['worst'] = preds[idx, torch.arange(len(idx))]
    return out


__all__: Sequence[str] = ('authors_sea', 'apgd_largereps', 'apgd_run',
                          'AUTHORS_SEA')
