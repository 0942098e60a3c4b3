"""A black-box, query-based l_inf attack for segmentation in the spirit of
Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020).

Random search over the vertices of the l_inf ball: each query changes one
square window of the perturbation to a random ``+-eps`` value per channel
and keeps the change when the image's objective improves. Only the model's
logits are used (forward passes under ``torch.no_grad``), never a gradient,
so it is unaffected by gradient masking: a model that resists the
white-box attacks but not this one is masking its gradients (issue #21).

The objective of an image is lexicographic: first the number of correct
valid pixels (lower is better), then a pixel loss (higher is better) that
shows progress before pixels flip.
"""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .checks import check_linf_only, check_n_iter
from .core import (AttackProblem, AttackResult, AttackSettings, Objective,
                   Prediction, SeedLike, StartLike, WorstCase, is_sync_point,
                   project, where_rows)
from .losses import LOSS_NAMES
from .precision import autocast_to

__all__ = [
    'Square', 'square_attack', 'square_side', 'square_queries',
    'SQUARE_QUERIES', 'SQUARE_P_INIT', 'SQUARE_LOSSES', 'STRIPES',
    'QUERIES_PER_ITER'
]

#: Default query budget per image (the starting point included): about the
#: compute of one SEA attack (300 iterations, :data:`QUERIES_PER_ITER`),
#: 25 s for 16 images of 64x64 with the benchmarks' U-Net on one CPU
#: thread, and enough to lower a clean model's accuracy measurably
#: (docs/attacks.md, "Square attack").
SQUARE_QUERIES = 1000
#: Default initial fraction of the image's pixels a square covers (the
#: side is ``sqrt(p * H * W)``). Square Attack's 0.05 is for 10000 queries;
#: compressed to 1000 its squares shrink to a few pixels within 100
#: queries, and it measured weaker here (docs/attacks.md).
SQUARE_P_INIT = 0.3
#: Objectives the tie-break can use: any pixel loss, or ``'margin'`` (the
#: logit margin of the correctly classified valid pixels).
SQUARE_LOSSES = ('margin', ) + tuple(LOSS_NAMES)
#: ``start=STRIPES`` (the default): Square Attack's vertical stripes.
STRIPES = 'stripes'
#: Forward passes that cost as much as one iteration of the white-box
#: attacks (a forward and an input-backward pass: 69 ms against 23 ms for
#: one forward of the texture U-Net on 16 images, one CPU thread).
QUERIES_PER_ITER = 3

# Square Attack's schedule of ``p``, for a budget of 10000 queries: ``p`` is
# halved after each of these query counts. Other budgets scale it.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_side(k: int, n_queries: int, p_init: float, height: int,
                width: int) -> int:
    """Side in pixels of the square of proposal ``k`` (from 0).

    Square Attack's schedule of ``p``, the fraction of the image's pixels
    the square covers, compressed or stretched to ``n_queries``; the side
    is ``round(sqrt(p * H * W))``, at least 1 and below the image's shorter
    side (so the square can move), or 1 for a one-pixel-wide image.
    """
    t = int(k / n_queries * 10000)
    p = p_init / 2**sum(t > h for h in _HALVINGS)
    side = int(round(math.sqrt(p * height * width)))
    return max(1, min(side, min(height, width) - 1))


def square_queries(n_iter: int) -> int:
    """The query budget with the compute of an ``n_iter``-iteration
    white-box attack (how an ensemble's ``n_iter`` maps to queries)."""
    return QUERIES_PER_ITER * check_n_iter(n_iter)


def _uniform(x: Tensor, seed: SeedLike, n: int) -> Tensor:
    """``(B, n)`` uniform numbers in [0, 1) for images ``x``, drawn on the
    CPU as :func:`~.core.start_noise` draws: one generator for the batch
    (``int``) or one per image (independent of batch composition)."""
    B = x.shape[0]
    if isinstance(seed, int):
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand((B, n), generator=gen, dtype=torch.float32)
    else:
        seeds = list(seed)
        if len(seeds) != B:
            raise ValueError(f'got {len(seeds)} seeds for a batch of {B} '
                             'images')
        u = torch.stack([
            torch.rand(
                n,
                generator=torch.Generator().manual_seed(int(s)),
                dtype=torch.float32) for s in seeds
        ])
    return u.to(x.device)


def _signs(u: Tensor) -> Tensor:
    """``+-1`` from uniform numbers, each with probability 1/2."""
    return torch.where(u < 0.5, -1.0, 1.0)


class _Queries:
    """The attack's random choices, drawn once per run: the stripes of the
    start (a sign per channel and column) and, per proposal, the square's
    corner and its sign per channel. Drawing them up front keeps the loop
    free of generator calls and makes an image's run depend on its seed
    only."""

    def __init__(self, x: Tensor, seed: SeedLike, n_proposals: int):
        B, C, H, W = x.shape
        self.C = C
        u = _uniform(x, seed, C * W + n_proposals * (2 + C))
        self.stripes = _signs(u[:, :C * W]).view(B, C, 1, W).to(x.dtype)
        self.u = u[:, C * W:].view(B, n_proposals, 2 + C)
        self.rows = torch.arange(H, device=x.device)
        self.cols = torch.arange(W, device=x.device)

    def square(self, k: int, side: int) -> Tuple[Tensor, Tensor]:
        """Proposal ``k``: the ``(B, 1, H, W)`` window of a square of
        ``side`` pixels at a uniformly random position per image, and the
        ``(B, C, 1, 1)`` sign per channel."""
        u = self.u[:, k]
        H, W = self.rows.numel(), self.cols.numel()
        top = (u[:, 0] * (H - side + 1)).long().clamp_(0, H - side)
        left = (u[:, 1] * (W - side + 1)).long().clamp_(0, W - side)
        in_rows = (self.rows >= top[:, None]) & (
            self.rows < top[:, None] + side)
        in_cols = (self.cols >= left[:, None]) & (
            self.cols < left[:, None] + side)
        window = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        sign = _signs(u[:, 2:]).view(-1, self.C, 1, 1)
        return window, sign


def _margin(obj: Objective, x: Tensor) -> Tuple[Tensor, Tensor]:
    """``(B,)`` mean over all pixels of the logit margin
    ``max_{k != y} u_k - u_y`` on correctly classified valid pixels (0
    elsewhere; so <= 0, rising as pixels near the boundary), and the
    correct valid pixels. One forward pass, no gradient."""
    with torch.no_grad():
        with autocast_to(x.device, obj.amp):
            logits = obj.model(x)
        logits = logits.float()
        top = logits.amax(1)
        obj.note_logits(logits, top)
        label = obj.safe_y.unsqueeze(1)
        own = logits.gather(1, label).squeeze(1)
        hit = own >= top
        other = logits.scatter(1, label, float('-inf')).amax(1)
        margin = torch.where(hit & obj.valid, other - own,
                             torch.zeros_like(own))
    obj.n_evals += x.shape[0]
    return margin.flatten(1).mean(1), obj._count(hit)


def _query(obj: Objective, loss: str, x: Tensor, k: int,
           n_queries: int) -> Tuple[Tensor, Tensor]:
    """One query of the whole batch: ``(objective, correct)`` per image,
    from the logits only."""
    if loss == 'margin':
        return _margin(obj, x)
    ev = obj.evaluate(
        x, step=min(k + 1, n_queries), total_steps=n_queries, need_grad=False)
    return ev.loss, ev.correct


def _square_steps(
        problem: AttackProblem, loss: str, seed: SeedLike, p_init: float,
        stats: Dict[str, Tensor]) -> Tuple[WorstCase, Tensor, Tensor]:
    """The random search: the start is query 1, then ``n_queries - 1``
    proposals, each one square on the image's best point so far, accepted
    when it lowers the correct pixels or keeps them and raises the loss.

    Fixed shapes for the whole run: an image that is done (not attacked, or
    no correct pixel left) is still evaluated but never changes
    (``torch.where``); the host reads back only every
    :data:`~.core.SYNC_EVERY` queries (early exit once no image is left,
    non-finite logits).
    """
    obj, x, eps = problem.obj, problem.x, problem.eps
    B, _, H, W = x.shape
    n_queries = problem.n_iter
    active = problem.active
    draws = _Queries(x, seed, n_queries - 1)
    ball = problem.ball(eps)
    lower, upper = ball.lower, ball.upper
    stripes = project(x + eps * draws.stripes, lower, upper)
    if isinstance(problem.start, str):  # STRIPES
        x_best = stripes
    else:
        x_best = problem.start_point(ball)
        if isinstance(problem.start, Tensor):
            # given points (e.g. the worst case at a smaller radius): an
            # image whose point is the clean image itself starts at the
            # stripes, as it would without one
            unmoved = (x_best == x).flatten(1).all(1)
            x_best = where_rows(unmoved, stripes, x_best)
    x_best = where_rows(active, x_best, x)
    best_loss, best_correct = _query(obj, loss, x_best, 0, n_queries)
    iters = active.long()
    accepted = torch.zeros(B, dtype=torch.long, device=x.device)
    if problem.early_stop:
        active = active & (best_correct > 0)
    for k in range(n_queries - 1):
        side = square_side(k, n_queries, p_init, H, W)
        window, sign = draws.square(k, side)
        # the square's value at its vertex of the ball; a proposal that
        # would change nothing (the window is already there) takes the
        # opposite vertex instead, so no query is wasted
        vertex = project(x + eps * sign, lower, upper)
        x_new = torch.where(window, vertex, x_best)
        same = (x_new == x_best).flatten(1).all(1)
        opposite = torch.where(window, project(x - eps * sign, lower, upper),
                               x_best)
        x_new = where_rows(same, opposite, x_new)
        new_loss, new_correct = _query(obj, loss, x_new, k + 1, n_queries)
        better = active & ((new_correct < best_correct) |
                           ((new_correct == best_correct) &
                            (new_loss > best_loss)))
        x_best = where_rows(better, x_new, x_best)
        best_correct = torch.where(better, new_correct, best_correct)
        best_loss = torch.where(better, new_loss, best_loss)
        iters += active
        accepted += better
        if problem.early_stop:
            active = active & (best_correct > 0)
        if is_sync_point(k) and not obj.check(active):
            break
    best = problem.fallback()
    best.x, best.correct, best.pred = x_best, best_correct, None
    best_loss = torch.where(problem.active, best_loss,
                            torch.full_like(best_loss, float('nan')))
    stats['accepted'] = accepted
    return best, best_loss, iters


@dataclass(frozen=True)
class Square(AttackSettings):
    """Square Attack (l_inf) for segmentation: random search with square
    updates, using the model's logits only.

    Per image: start at vertical stripes (each column of each channel at
    ``+eps`` or ``-eps``, projected onto [0, 1]), the start counting as the
    first query; then, for each further query, a square of side
    ``round(sqrt(p * H * W))`` (:func:`square_side`: Square Attack's
    schedule of ``p`` from ``p_init``, scaled to ``n_queries``) at a random
    position is set to ``+-eps`` per channel (random) around ``x``, the
    point projected onto the eps-ball intersected with [0, 1] (and onto
    ``mask``), and kept when it is better: fewer correct valid pixels, or
    as many and a higher ``loss``. An image stops once none of its valid
    pixels is correct. Like the other attacks it never reports more correct
    pixels than the clean image.

    Call it as ``Square(eps, n_queries)(model, x, y)`` (the model is only
    called under ``torch.no_grad``); :func:`square_attack` is a thin
    wrapper.

    Attributes:
        eps (float): l_inf radius as a fraction, e.g. ``8/255``.
        n_iter (int): The query budget: forward passes per image, the start
            included (the clean prediction is one more).
        loss (str): The tie-break between points with as many correct
            pixels: ``'mask_ce'`` (CE on the correctly classified pixels,
            the default), ``'margin'`` (their logit margin
            ``max_{k != y} u_k - u_y``) or any other pixel loss; its mean
            over the pixels, higher is better. Targeted attacks use
            ``'ce'`` (minimising the CE to the target).
        p_init (float): Initial fraction of the pixels a square covers, in
            (0, 1].
        seed (SeedLike): Seeds the stripes and the squares: one ``int``
            for the batch, or one per image (an image's run then depends
            only on its seed).
        start: ``'stripes'`` (default) or where the other attacks start
            (:data:`~.core.StartLike`: ``None`` the clean image, a seed for
            uniform noise, :class:`~.core.UniformNoise`, starting points;
            an image whose given point is the clean image itself starts at
            the stripes).
        ignore_index, amp, targeted, class_weights, early_stop,
        result_precision: As in :class:`~.apgd.APGD`.
        norm (str): ``'linf'`` only (the square attack searches the l_inf
            ball; the field is there to say so clearly).
        eot (int): ``1`` only (one query per point).
    """
    n_iter: int = SQUARE_QUERIES
    start: Union[str, StartLike] = STRIPES
    p_init: float = SQUARE_P_INIT
    seed: SeedLike = 0

    what = 'square_attack'
    random_default = False

    def attack(self, model, x: Tensor, y: Tensor, mask: Optional[Tensor],
               clean: Optional[Prediction], validate: bool,
               legacy: dict) -> AttackResult:
        """See :meth:`~.core.AttackSettings.__call__`.

        Returns:
            AttackResult: The best point found per image (or ``x`` where the
            clean image is better); ``loss`` holds its objective, ``n_iter``
            the queries each image used (start included), ``n_evals`` all
            forward passes counted per image; ``extra`` adds ``queries`` (the
            budget), ``p_init``, ``loss``, ``start`` and ``accepted`` (``(B,)``
            accepted proposals).
        """
        if legacy:
            raise TypeError('square_attack() got unexpected keyword '
                            f'argument(s) {sorted(legacy)}')
        loss, start, seed = self.loss, self.start, self.seed
        check_linf_only(self.norm, 'the square attack')
        if self.eot != 1:
            raise ValueError('the square attack queries each point once: '
                             f'eot must be 1, got {self.eot!r}')
        n_queries = self.n_iter
        if validate:
            n_queries = check_n_iter(n_queries, what='n_queries')
        p_init = float(self.p_init)
        if not 0 < p_init <= 1:
            raise ValueError(f'p_init must be in (0, 1], got {p_init!r}')
        if loss not in SQUARE_LOSSES:
            raise ValueError(f'unknown loss {loss!r} for the square attack: '
                             f'use one of {", ".join(SQUARE_LOSSES)}')
        if self.targeted and loss == 'margin':
            raise ValueError("targeted attacks minimise the CE to the target "
                             "labels: use loss='ce'")
        stripes = isinstance(start, str)
        if stripes and start != STRIPES:
            raise ValueError(f"start must be 'stripes' or a start of the "
                             f'other attacks (None, a seed, UniformNoise, '
                             f'points), got {start!r}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            seed = [int(s) for s in seed]
        stats: Dict[str, Tensor] = {}
        # the objective of the named losses ('margin' is computed in the
        # step loop); the tie-break is the only objective (none tracked)
        objective = 'mask_ce' if loss == 'margin' else loss
        result = self.run(
            lambda p: _square_steps(p, loss, seed, p_init, stats),
            model,
            x,
            y,
            mask,
            clean,
            validate,
            loss=objective,
            track_loss=objective,
            n_iter=n_queries,
            check_iter=False)
        B = result.correct.shape[0]
        result.extra.update(
            queries=n_queries,
            p_init=p_init,
            loss=loss,
            start=STRIPES if stripes else _start_name(start),
            accepted=stats.get(
                'accepted',
                torch.zeros(B, dtype=torch.long,
                            device=result.correct.device)))
        return result


def square_attack(model,
                  x: Tensor,
                  y: Tensor,
                  eps: float,
                  n_queries: int = SQUARE_QUERIES,
                  *,
                  mask: Optional[Tensor] = None,
                  clean: Optional[Prediction] = None,
                  validate: bool = True,
                  **options) -> AttackResult:
    """The square attack: a thin wrapper, ``Square(eps, n_queries,
    **options)(model, x, y, mask=mask, clean=clean, validate=validate)``;
    ``options`` are the other fields of :class:`Square` (``loss``,
    ``p_init``, ``seed``, ``start``, ``ignore_index``, ``amp``,
    ``targeted``, ``class_weights``, ``early_stop``, ``result_precision``,
    ``norm``)."""
    settings, unknown = Square.from_options(
        options,
        'square_attack', ('n_iter', 'track_loss', 'eot'),
        eps=eps,
        n_iter=n_queries)
    return settings(model, x, y, mask, clean, validate, **unknown)


def _start_name(start: StartLike) -> str:
    if start is None:
        return 'clean'
    if isinstance(start, Tensor):
        return 'points'
    return 'uniform'
