"""PAdam: projected Adam on the l_inf ball (Halmosi, Mohos, Jelasity, ECCV
2024, "Evaluating the Adversarial Robustness of Semantic Segmentation:
Trying Harder Pays Off"), with the CE loss (PAdam-CE) or the cosine loss
between the softmax output and the one-hot label (PAdam-Cos, ``'cos'``).

"Step-size free" in their sense: Adam scales each coordinate's step by its
own gradient history, so one learning rate (``2/255``) serves every model
and radius, with no step-size control or schedule. docs/attacks.md,
"PAdam", gives the algorithm and what it adds to SEA on this package's
models.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_eps, check_linf_only
from .core import (AttackProblem, AttackResult, AttackSettings, Prediction,
                   WorstCase, project, run_fixed_steps)

__all__ = ['PAdam', 'padam', 'PADAM_LR', 'PADAM_BETAS', 'PADAM_EPS']

#: Learning rate (in [0, 1] pixel units): Halmosi et al.'s, for every radius.
PADAM_LR = 2 / 255
#: Adam's moment decay rates (PyTorch's defaults, as theirs).
PADAM_BETAS = (0.9, 0.999)
#: Adam's denominator term, relative to the size of the image's gradient
#: (the gradients Adam sees are scaled so that the first one's largest
#: entry is 1).
PADAM_EPS = 1e-8


def _grad_scale(grad: Tensor, scale: Tensor, per_step: bool) -> Tensor:
    """The per-image factor Adam's gradients are multiplied by: the inverse
    of the largest absolute entry of the image's first non-zero gradient
    (``per_step``: of this gradient); 0 until there is one. No host read."""
    amax = grad.flatten(1).abs().amax(1)
    inverse = torch.where(amax > 0, 1.0 / amax, torch.zeros_like(amax))
    if per_step:
        return inverse
    return torch.where(scale > 0, scale, inverse)


def _padam_steps(problem: AttackProblem, lr: float, betas: Tuple[float, float],
                 adam_eps: float) -> Tuple[WorstCase, Tensor, Tensor]:
    """PAdam's step loop: ``n_iter`` AMSGrad steps on the perturbation,
    each followed by the projection onto the feasible box; every iterate
    (the start included) is evaluated and each image keeps its
    lowest-accuracy one.

    The whole batch keeps its shape for the whole run: an image that is
    done (not attacked, or early-stopped) is still evaluated but no longer
    moves (``torch.where``); the host reads back only every
    :data:`~.core.SYNC_EVERY` iterations (docs/attacks.md, "Host
    synchronisation"). The Adam state of an image that is done is never
    read again (``active`` only shrinks), so it is not masked.
    """
    obj, x = problem.obj, problem.x
    B = x.shape[0]
    beta1, beta2 = betas
    # under reduced precision the gradient comes scaled by a power of two
    # that follows its size (Objective): only its direction per step is
    # known, so each step is normalised
    per_step = obj.reduced_precision(x.device)
    ball = problem.ball(problem.eps)
    lower, upper = ball.lower, ball.upper
    # first and second moments and the running maximum of the second
    # (AMSGrad), of the scaled gradient
    state = dict(
        m=torch.zeros_like(x),
        v=torch.zeros_like(x),
        v_max=torch.zeros_like(x),
        scale=torch.zeros(B, device=x.device))
    view = (-1, ) + (1, ) * (x.dim() - 1)

    def adam_step(k: int, x_adv: Tensor, grad: Tensor) -> Tensor:
        state['scale'] = _grad_scale(grad, state['scale'], per_step)
        g = grad * state['scale'].view(view)
        t = k + 1
        m = state['m'].mul_(beta1).add_(g, alpha=1 - beta1)
        v = state['v'].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        v_max = state['v_max'] = torch.maximum(state['v_max'], v)
        denom = (v_max / (1 - beta2**t)).sqrt_().add_(adam_eps)
        step = m.div(denom).mul_(lr / (1 - beta1**t))
        return project(x_adv + step, lower, upper)

    # n_iter Adam steps; the last iterate is only evaluated
    return run_fixed_steps(problem, ball, adam_step)


@dataclass(frozen=True)
class PAdam(AttackSettings):
    """PAdam (l_inf): Adam with AMSGrad ascending ``loss``, the iterate
    projected onto the eps-ball intersected with [0, 1] after each step.

    Per image, with ``g_t`` the input gradient of the image's loss (the
    mean of its loss map) divided by ``c``, the largest absolute entry of
    the image's first gradient::

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = b2 v_{t-1} + (1 - b2) g_t^2,   v^_t = max(v^_{t-1}, v_t)
        x_t = P(x_{t-1} + lr / (1 - b1^t) * m_t
                          / (sqrt(v^_t / (1 - b2^t)) + 1e-8))

    i.e. ``torch.optim.Adam(amsgrad=True, maximize=True)`` on the
    perturbation, as Halmosi et al. run it, with Adam's ``1e-8`` relative
    to the image's gradient (``c`` is constant within a run, so nothing
    else changes): the attack does not depend on the image size, the batch
    or the loss's scale. Under reduced precision (``amp`` or an enclosing
    autocast) the gradient comes scaled by a per-image power of two that
    follows its size (docs/attacks.md, "Precision"), so there ``c`` is
    each step's own largest entry (only the direction of each step is
    known; measured weaker, docs/attacks.md, "PAdam").

    Like the other attacks of the package it reports, per image, the
    lowest-accuracy iterate (never worse than the clean image) and stops an
    image once none of its valid pixels is correct.

    Call it as ``PAdam(eps, n_iter)(model, x, y)``; :func:`padam` is a thin
    wrapper.

    Attributes:
        eps, ignore_index, amp, targeted, class_weights, early_stop,
        result_precision, eot: As in :class:`~.apgd.APGD`.
        norm (str): ``'linf'`` only (an l2 PAdam is not implemented; the
            argument is there to say so clearly).
        n_iter (int): Adam steps (Halmosi et al. use 200).
        loss (str): Pixel loss: ``'ce'`` (PAdam-CE), ``'cos'`` (PAdam-Cos)
            or any other of :data:`~.losses.PIXEL_LOSSES`.
        lr (float, optional): Learning rate in [0, 1] pixel units;
            ``None`` takes :data:`PADAM_LR` (``2/255`` at every radius, as
            Halmosi et al.).
        betas (tuple): Adam's decay rates of the first and second moment.
        start (StartLike): Where to start: a seed (default 0) for a uniform
            random start in the ball, as Halmosi et al., or ``None``,
            :class:`~.core.UniformNoise`, starting points (as in
            :func:`~.apgd.apgd`).

    """
    n_iter: int = 200
    loss: str = 'ce'
    lr: Optional[float] = None
    betas: Tuple[float, float] = PADAM_BETAS

    what = 'padam'

    def attack(self, model, x: Tensor, y: Tensor, mask: Optional[Tensor],
               clean: Optional[Prediction], validate: bool,
               legacy: dict) -> AttackResult:
        """See :meth:`~.core.AttackSettings.__call__`."""
        if legacy:
            raise TypeError('padam() got unexpected keyword argument(s) '
                            f'{sorted(legacy)}')
        check_linf_only(self.norm, 'PAdam')
        lr = PADAM_LR if self.lr is None else check_eps(self.lr, 'lr')
        b1, b2 = (float(b) for b in self.betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(
                f'betas must be in [0, 1), got {tuple(self.betas)}')
        return self.run(
            lambda p: _padam_steps(p, lr, (b1, b2), PADAM_EPS),
            model,
            x,
            y,
            mask,
            clean,
            validate,
            track_loss=self.loss)


def padam(model,
          x: Tensor,
          y: Tensor,
          eps: float,
          n_iter: int = 200,
          *,
          mask: Optional[Tensor] = None,
          clean: Optional[Prediction] = None,
          validate: bool = True,
          **options) -> AttackResult:
    """PAdam: a thin wrapper, ``PAdam(eps, n_iter, **options)(model, x, y,
    mask=mask, clean=clean, validate=validate)``; ``options`` are the other
    fields of :class:`PAdam` (``loss='ce'``, ``lr``, ``betas``, ``start``,
    ``ignore_index``, ``amp``, ``targeted``, ``class_weights``,
    ``early_stop``, ``result_precision``, ``eot``, ``norm``)."""
    settings, unknown = PAdam.from_options(
        options, 'padam', ('track_loss', ), eps=eps, n_iter=n_iter)
    return settings(model, x, y, mask, clean, validate, **unknown)
