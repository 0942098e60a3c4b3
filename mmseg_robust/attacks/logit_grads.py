"""The attack losses with their logit gradients in closed form
(docs/attacks.md, "Closed-form logit gradients").

Every iteration of an attack evaluates a pixel loss on ``(B, K, H, W)``
logits and differentiates its pixel mean. Through autograd that costs
several passes over the logits per loss (log-softmax forward and backward,
the zero-filled backward of the label gather, JS's extra softmax and
scatter), which on a light model is as much as a third of the model's own
forward and backward (docs/benchmarks.md, section 7). All of SEA's losses
have a simple gradient with respect to the logits: for the CE family it is
``c * (p - e_y)`` with a detached per-pixel factor ``c``; JS depends only on
``q = p_y``, so its gradient is ``-JS'(q) q (p - e_y)``; the masked spherical
loss differentiates ``u_y / ||u||`` and ``cos`` ``(1 + r)**(-1/2)``.
:func:`closed_form_loss` computes value, tracked value and this gradient
from one ``exp`` of the logits (``cos``, ``mask_sph`` and ``cossim_ce`` add
one more full-size temporary each), and the attack hands the gradient to
autograd at the logits (``torch.autograd.grad(logits, x,
grad_outputs=...)``), so the model's backward is the only autograd pass.

Plain PyTorch; values equal :data:`~.losses.PIXEL_LOSSES` to float32
rounding, and so do gradients, except where autograd's rounds to 0 and
this one does not (tested against autograd and a float64 reference):

* the label component of ``p - e_y`` is ``-(1 - p_y)``, summed from the
  other classes' probabilities: it does not cancel to 0 on confidently
  correct pixels as ``p_y - 1`` does in float32 (margins beyond ~17);
* ``cos`` keeps its (tiny) gradient on confidently wrong pixels, where
  autograd's ``expm1`` backward rounds it to 0 (margins beyond ~17).
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import (PIXEL_LOSSES, PixelTerms, bal_ce_lambda, cossim_weight,
                     js_of_label_prob, label_is_max, label_weights)

__all__ = [
    'CLOSED_FORM_LOSSES', 'ClosedForm', 'closed_form_loss', 'autograd_loss',
    'logit_loss', 'LogitBuffer', 'input_grad'
]

#: Losses (attacked or tracked) with a closed-form logit gradient: all of
#: :data:`~.losses.PIXEL_LOSSES` (a loss added there without one is
#: differentiated by autograd).
CLOSED_FORM_LOSSES = ('ce', 'bal_ce', 'cossim_ce', 'mask_ce', 'js', 'mask_sph',
                      'mask_ce_bal', 'cos')


class ClosedForm(NamedTuple):
    """One evaluation of a pixel loss from its closed form.

    Attributes:
        loss (Tensor): ``(B, H, W)`` loss map (0 on ignored pixels).
        tracked (Tensor | None): ``(B, H, W)`` map of the tracked loss
            (``None`` if none was asked for).
        grad (Tensor | None): ``(B, K, H, W)`` gradient of ``scale *
            loss.sum()`` with respect to the logits (``None`` without
            ``need_grad``).
        top (Tensor): ``(B, H, W)`` largest logit per pixel.
        hit (Tensor): ``(B, H, W)`` bool: the label's logit is the largest
            (:func:`~.losses.label_is_max`).
    """
    loss: Tensor
    tracked: Optional[Tensor]
    grad: Optional[Tensor]
    top: Tensor
    hit: Tensor


class LogitBuffer:
    """One float32 buffer of the logits' shape for :func:`closed_form_loss`,
    reused by every evaluation of an attack on the CPU, where a fresh
    tensor of this size costs about as much again in page faults (the
    attacks' shapes are fixed). On other devices the caching allocator
    serves fresh tensors cheaply, and a buffer kept between evaluations
    would only add to the peak memory of the forward pass: there
    :meth:`get` returns ``None``."""

    def __init__(self):
        self.buf: Optional[Tensor] = None

    def get(self, like: Tensor) -> Optional[Tensor]:
        """The buffer (CPU only), new if ``like``'s shape changed."""
        if like.device.type != 'cpu':
            return None
        if self.buf is None or self.buf.shape != like.shape:
            self.buf = torch.empty_like(like, dtype=torch.float32)
        return self.buf


class _Softmax:
    """The softmax terms every loss reads, from one pass of ``exp``."""

    def __init__(self, u: Tensor, labels: Tensor, out: Optional[Tensor],
                 top: Optional[Tensor]):
        self.u = u
        self.label = labels.unsqueeze(1)
        self.top = u.amax(1) if top is None else top
        # e_k = exp(u_k - max): in [0, 1], 1 at the maximum; computed in
        # place in one buffer, which becomes the gradient (a fresh buffer of
        # this size costs as much again on a CPU, in page faults)
        e = torch.sub(u, self.top.unsqueeze(1), out=out).exp_()
        self.u_y = u.gather(1, self.label).squeeze(1)
        z_y = self.u_y - self.top
        self.hit = z_y >= 0
        e_y = z_y.exp()
        # the other classes' mass, summed without the label's term: 1 - p_y
        # without the cancellation of 1 - p_y in float32
        e.scatter_(1, self.label, 0.0)
        other = e.sum(1)
        s = other + e_y
        self.others = e  # exp(u_k - max) for k != y, 0 at y
        self.s = s
        self.z_y = z_y  # u_y - max <= 0
        self.log_q = z_y - s.log()
        self.d = other / s

    @property
    def ce(self) -> Tensor:
        """``-log p_y`` per pixel."""
        return -self.log_q

    def ce_family_grad(self, c: Tensor) -> Tensor:
        """``c * (p - e_y)`` per pixel, computed in place of the others'
        terms (read once)."""
        g = self.others.mul_((c / self.s).unsqueeze(1))
        self.others = None  # consumed
        return g.scatter_(1, self.label, (-c * self.d).unsqueeze(1))


def _ce_factor(name: str, sm: _Softmax, valid: Tensor, step, total_steps,
               class_weights) -> Tensor:
    """The detached factor ``c`` of a CE-family loss ``c * CE``."""
    v = valid.float()
    hit = sm.hit.float()
    if name == 'ce':
        return v
    if name == 'mask_ce':
        return hit * v
    if name == 'bal_ce':
        lam = bal_ce_lambda(step, total_steps)
        return ((1 - lam) * hit + lam * (1 - hit)) * v
    if name == 'cossim_ce':
        return cossim_weight(sm.u, sm.label.squeeze(1)) * v
    if name == 'mask_ce_bal':
        w = label_weights(
            sm.label.squeeze(1), valid, sm.u.shape[1], class_weights)
        return w * hit * v
    raise ValueError(f'no closed form for loss {name!r}; the losses with '
                     f'one are {CLOSED_FORM_LOSSES}')


def _value(name: str, sm: _Softmax, valid: Tensor, factors: dict,
           **kw) -> Tensor:
    """The loss map of ``name``; CE-family factors are kept in
    ``factors``."""
    if name == 'js':
        q = sm.log_q.exp()
        log1p_q = torch.log1p(q)
        raw = js_of_label_prob(q, sm.log_q, sm.d, log1p_q)
        factors['js'] = (q, log1p_q, raw)
        return raw.clamp_min(0.0) * valid
    if name == 'cos':
        # log r = log sum_{k != y} exp(2 (u_k - u_y)), from the softmax's
        # exp(u_k - max) (losses.cos_loss: the same value)
        m2 = -2 * sm.z_y  # 2 (max - u_y) >= 0
        log_r = (sm.others * sm.others).sum(1).log() + m2
        sp = F.softplus(log_r)
        factors['cos'] = (m2, log_r, sp)
        # one class: log r = -inf, so 0
        return -torch.expm1(-0.5 * sp) * valid
    if name == 'mask_sph':
        sumsq = (sm.u * sm.u).sum(1)
        factors['mask_sph'] = sumsq
        return -(sm.hit
                 & valid).float() * sm.u_y / sumsq.clamp_min(1e-24).sqrt()
    c = factors[name] = _ce_factor(name, sm, valid, **kw)
    return c * sm.ce


def _grad(name: str, sm: _Softmax, valid: Tensor, factors: dict,
          scale: float) -> Tensor:
    """``scale`` times the logits' gradient of the sum of ``name``'s map,
    written into the softmax's buffer (``factors``: what :func:`_value`
    kept)."""
    if name == 'js':
        q, log1p_q, raw = factors['js']
        # JS'(q) = log(q / (1 + q)) / 2 and dq/du = q (e_y - p); 0 where
        # the clamp at 0 cut the value, as autograd's clamp_min
        c = 0.5 * q * (log1p_q - sm.log_q)
        c = torch.where((raw >= 0) & valid, c, torch.zeros_like(c))
        return sm.ce_family_grad(c * scale)
    if name == 'cos':
        # L = 1 - (1 + r)**-1/2: dL/du_k = r_k (1 + r)**-3/2 for k != y
        # (r_k = exp(2 (u_k - u_y)) = exp(u_k - max)**2 exp(m2)), and
        # -r (1 + r)**-3/2 at the label, in logs against overflow
        m2, log_r, sp = factors['cos']
        v = valid.float() * scale
        c = torch.exp(m2 - 1.5 * sp) * v
        g = sm.others.mul_(sm.others).mul_(c.unsqueeze(1))
        sm.others = None
        return g.scatter_(1, sm.label,
                          (-torch.exp(log_r - 1.5 * sp) * v).unsqueeze(1))
    if name == 'mask_sph':
        # d(u_y / n)/du = e_y / n - u_y u / n**3, n = sqrt(max(|u|^2, 1e-24))
        sumsq = factors['mask_sph']
        m = (sm.hit & valid).float() * scale
        n = sumsq.clamp_min(1e-24).sqrt()
        b = torch.where(sumsq > 1e-24, m * sm.u_y / (n * n * n),
                        torch.zeros_like(n))
        g = torch.mul(sm.u, b.unsqueeze(1), out=sm.others)
        sm.others = None
        return g.scatter_add_(1, sm.label, (-m / n).unsqueeze(1))
    return sm.ce_family_grad(factors[name] * scale)


@torch.no_grad()
def closed_form_loss(logits: Tensor,
                     labels: Tensor,
                     valid: Tensor,
                     loss: str,
                     track: Optional[str] = None,
                     *,
                     step: Optional[int] = None,
                     total_steps: Optional[int] = None,
                     class_weights: Optional[Tensor] = None,
                     need_grad: bool = True,
                     scale: float = 1.0,
                     negate: bool = False,
                     out: Optional[Tensor] = None,
                     top: Optional[Tensor] = None) -> ClosedForm:
    """Loss map, tracked map and logit gradient of a pixel loss in closed
    form (module docstring).

    Args:
        logits (Tensor): ``(B, K, H, W)`` float32 logits (not modified).
        labels (Tensor): ``(B, H, W)`` int64 labels, ignored pixels set to
            a valid class (they are masked by ``valid``).
        valid (Tensor): ``(B, H, W)`` bool, the pixels that count.
        loss (str): The attacked loss, one of :data:`CLOSED_FORM_LOSSES`.
        track (str, optional): A second loss whose map is returned as
            ``tracked`` (no gradient).
        step, total_steps, class_weights: As for
            :data:`~.losses.PIXEL_LOSSES`.
        need_grad (bool): Whether to compute the gradient.
        scale (float): Factor of the gradient (``1 / (H W)`` for the pixel
            mean).
        negate (bool): Minimise instead (targeted attacks: the map and
            gradient of ``-loss``).
        out (Tensor, optional): A float32 buffer of the logits' shape to
            compute in; ``grad`` is then this buffer, valid until the
            buffer is used again.
        top (Tensor, optional): ``logits.amax(1)`` if already computed.

    Returns:
        ClosedForm: See there.
    """
    sm = _Softmax(logits.detach(), labels, out, top)
    kw = dict(step=step, total_steps=total_steps, class_weights=class_weights)
    factors: dict = {}
    lmap = _value(loss, sm, valid, factors, **kw)
    tracked = None
    if track is not None:
        tracked = lmap if track == loss else _value(track, sm, valid, factors,
                                                    **kw)
    grad = None
    if need_grad:
        grad = _grad(loss, sm, valid, factors, -scale if negate else scale)
    if negate:
        lmap = -lmap
    return ClosedForm(lmap, tracked, grad, sm.top, sm.hit)


def autograd_loss(logits: Tensor,
                  labels: Tensor,
                  valid: Tensor,
                  loss: str,
                  track: Optional[str] = None,
                  *,
                  ignore_index: int = 255,
                  step: Optional[int] = None,
                  total_steps: Optional[int] = None,
                  class_weights: Optional[Tensor] = None,
                  need_grad: bool = True,
                  scale: float = 1.0,
                  negate: bool = False,
                  top: Optional[Tensor] = None) -> ClosedForm:
    """The :class:`ClosedForm` of :func:`closed_form_loss`, by autograd
    through :data:`~.losses.PIXEL_LOSSES` (for a loss without a closed form,
    and as the tests' reference); the same arguments without ``out``, and
    ``ignore_index``, the label the losses ignore (ignored pixels are
    passed to them with it)."""
    u = logits.detach()
    top = u.amax(1) if top is None else top
    hit = label_is_max(u, labels, top)
    y = torch.where(valid, labels, torch.full_like(labels, ignore_index))
    kw = dict(
        ignore_index=ignore_index,
        step=step,
        total_steps=total_steps,
        class_weights=class_weights)
    u = u.requires_grad_(need_grad)
    with torch.enable_grad() if need_grad else torch.no_grad():
        terms = PixelTerms(u, y, ignore_index, correct=hit.float())
        lmap = PIXEL_LOSSES[loss](u, y, terms=terms, **kw)
        if negate:
            lmap = -lmap
        grad = torch.autograd.grad(lmap.sum() *
                                   scale, u)[0] if need_grad else None
    tracked = None
    if track is not None:
        with torch.no_grad():
            tracked = PIXEL_LOSSES[track](u, y, terms=terms, **kw)
    return ClosedForm(lmap.detach(), tracked, grad, top, hit)


def logit_loss(logits: Tensor,
               labels: Tensor,
               valid: Tensor,
               loss: str,
               track: Optional[str] = None,
               closed: Optional[bool] = None,
               **kwargs) -> ClosedForm:
    """Loss map, tracked map and logit gradient: in closed form where both
    losses have one (:data:`CLOSED_FORM_LOSSES`; ``closed=False`` forces
    autograd), else by autograd. ``kwargs`` are those of
    :func:`autograd_loss` and :func:`closed_form_loss`."""
    if closed is None:
        closed = {loss, track or loss} <= set(CLOSED_FORM_LOSSES)
    if closed:
        kwargs.pop('ignore_index', None)
        return closed_form_loss(logits, labels, valid, loss, track, **kwargs)
    kwargs.pop('out', None)
    return autograd_loss(logits, labels, valid, loss, track, **kwargs)


def input_grad(logits: Tensor, x: Tensor, logit_grad: Tensor) -> Tensor:
    """The model's backward from ``logit_grad`` at ``logits`` to the input
    ``x`` only (no weight gradients). Never returns ``logit_grad``'s memory
    (a model that passes its input through would hand back the reused
    buffer, which the next evaluation overwrites)."""
    grad, = torch.autograd.grad(logits, x, grad_outputs=logit_grad)
    if grad.untyped_storage().data_ptr() == \
            logit_grad.untyped_storage().data_ptr():
        grad = grad.clone()
    return grad
