"""Pixel-wise losses for attacks on semantic segmentation (docs/attacks.md, the
paper's Section 3.1).

Every loss maps logits ``(B, K, H, W)`` and labels ``(B, H, W)`` to a
per-pixel loss map ``(B, H, W)`` that is exactly zero on ignored pixels. The
attack objective of an image is the mean of that map over all ``H * W``
pixels. Masks and weights are detached: they select or weigh pixels but carry
no gradient. All computations run in float32 whatever the logits' dtype.
"""
import math
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'PIXEL_LOSSES', 'pixel_loss', 'class_weights_from_counts', 'LOSS_NAMES',
    'PixelTerms', 'check_logits_labels', 'check_loss_name', 'label_is_max',
    'argmax_classes', 'js_of_label_prob', 'cossim_weight', 'label_weights',
    'bal_ce_lambda'
]

_LOG2 = math.log(2.0)


class PixelTerms:
    """Terms the pixel losses share, computed once per model evaluation.

    The attacks evaluate the attacked loss and, for APGD's step-size
    control, a tracked objective (often CE, docs/attacks.md) on the same
    logits; both read the log-softmax, the CE map and the correctness mask
    from here, so tracking CE costs no extra pass over the logits.

    Args:
        logits (Tensor): ``(B, K, H, W)`` logits (cast to float32).
        labels (Tensor): ``(B, H, W)`` integer labels.
        ignore_index (int): Label of ignored pixels.
        pred (Tensor, optional): ``argmax`` of the logits if already known.
        correct (Tensor, optional): The detached float mask of correctly
            classified pixels if already known (the attacks compute it as
            "the label's logit is maximal", without an argmax).
    """

    def __init__(self,
                 logits: Tensor,
                 labels: Tensor,
                 ignore_index: int,
                 pred: Optional[Tensor] = None,
                 correct: Optional[Tensor] = None):
        self.logits = logits.float()
        self.valid = labels != ignore_index
        self.labels = torch.where(self.valid, labels, torch.zeros_like(labels))
        self._pred = pred
        self._cache: Dict[str, Tensor] = {}
        if correct is not None:
            self._cache['correct'] = correct

    def _get(self, key: str, fn: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def log_probs(self) -> Tensor:
        """``log_softmax`` over the classes, ``(B, K, H, W)``."""
        return self._get('log_probs',
                         lambda: F.log_softmax(self.logits, dim=1))

    @property
    def log_p_label(self) -> Tensor:
        """``log p_y`` per pixel, ``(B, H, W)``."""
        return self._get(
            'log_p_label', lambda: self.log_probs.gather(
                1, self.labels.unsqueeze(1)).squeeze(1))

    @property
    def ce(self) -> Tensor:
        """Cross-entropy ``-log p_y`` per pixel (not yet masked)."""
        return self._get('ce', lambda: -self.log_p_label)

    @property
    def pred(self) -> Tensor:
        """Predicted class per pixel (detached)."""
        if self._pred is None:
            self._pred = argmax_classes(self.logits.detach())
        return self._pred

    @property
    def correct(self) -> Tensor:
        """Detached float mask of pixels whose argmax equals the label."""
        return self._get('correct', lambda: (self.pred == self.labels).float())


def argmax_classes(logits: Tensor) -> Tensor:
    """``logits.argmax(1)``, fast: ``max(1).indices`` is 5-20x faster on CPU
    for ``(B, K, H, W)`` logits and also returns the first maximum."""
    return logits.max(1).indices


def label_is_max(logits: Tensor,
                 labels: Tensor,
                 top: Optional[Tensor] = None) -> Tensor:
    """``(B, H, W)`` bool: the label's logit is the largest of its pixel,
    i.e. the pixel is correctly classified (``labels`` must be valid class
    indices; ignored pixels are the caller's to mask).

    Equal to ``argmax == label`` except where another class ties with the
    label for the maximum (then the pixel counts as correct here). It needs
    no argmax: on the CPU ``amax`` over the classes is about 15 times
    faster than ``max(1)`` with indices (docs/benchmarks.md). ``top``:
    ``logits.amax(1)`` if already computed.
    """
    if top is None:
        top = logits.amax(1)
    return logits.gather(1, labels.unsqueeze(1)).squeeze(1) >= top


def _terms(logits: Tensor, labels: Tensor, ignore_index: int,
           kwargs: dict) -> PixelTerms:
    terms = kwargs.get('terms')
    if terms is None:
        terms = PixelTerms(logits, labels, ignore_index, kwargs.get('pred'))
    return terms


def ce_loss(logits: Tensor,
            labels: Tensor,
            ignore_index: int = 255,
            **kwargs) -> Tensor:
    """Cross-entropy ``-log p_y``."""
    t = _terms(logits, labels, ignore_index, kwargs)
    return t.ce * t.valid


def bal_ce_loss(logits: Tensor,
                labels: Tensor,
                ignore_index: int = 255,
                step: Optional[int] = None,
                total_steps: Optional[int] = None,
                **kwargs) -> Tensor:
    """SegPGD's balanced CE with ``lambda = (step - 1) / (2 * total_steps)``.

    ``step`` counts ``1..total_steps`` within the current attack run.
    """
    lam = bal_ce_lambda(step, total_steps)
    t = _terms(logits, labels, ignore_index, kwargs)
    weight = (1 - lam) * t.correct + lam * (1 - t.correct)
    return weight * t.ce * t.valid


def bal_ce_lambda(step: Optional[int], total_steps: Optional[int]) -> float:
    """SegPGD's ``lambda = (step - 1) / (2 * total_steps)``, checked."""
    if step is None or total_steps is None:
        raise ValueError("loss 'bal_ce' needs step and total_steps "
                         '(1 <= step <= total_steps)')
    if not 1 <= step <= total_steps:
        raise ValueError(f"loss 'bal_ce': step must be in [1, total_steps="
                         f'{total_steps}], got {step}')
    return (step - 1) / (2 * total_steps)


def cossim_ce_loss(logits: Tensor,
                   labels: Tensor,
                   ignore_index: int = 255,
                   **kwargs) -> Tensor:
    """CosPGD: CE weighted by ``sigmoid(u_y) / ||sigmoid(u)||_2``."""
    t = _terms(logits, labels, ignore_index, kwargs)
    return cossim_weight(t.logits, t.labels) * t.ce * t.valid


@torch.no_grad()
def cossim_weight(logits: Tensor, labels: Tensor) -> Tensor:
    """CosPGD's detached pixel weight ``sigmoid(u_y) / ||sigmoid(u)||_2``
    (``labels`` valid class indices)."""
    sig = logits.float().sigmoid()
    return sig.gather(1, labels.unsqueeze(1)).squeeze(1) / \
        sig.norm(p=2, dim=1)


def mask_ce_loss(logits: Tensor,
                 labels: Tensor,
                 ignore_index: int = 255,
                 **kwargs) -> Tensor:
    """CE on correctly classified pixels only."""
    t = _terms(logits, labels, ignore_index, kwargs)
    return t.correct * t.ce * t.valid


def js_loss(logits: Tensor,
            labels: Tensor,
            ignore_index: int = 255,
            **kwargs) -> Tensor:
    """Jensen-Shannon divergence between ``softmax(u)`` and one-hot ``e_y``.

    With ``m = (p + e_y) / 2`` the divergence depends only on ``q = p_y``::

        D_JS = log 2 + (q log q - (1 + q) log(1 + q)) / 2

    That form cancels (``log 2 - log 2``) once ``q`` is close to 1: in float32
    beyond a logit margin of about 17 it rounds to exactly 0, with a zero
    gradient, on every confidently correct pixel. For ``q >= 1/2`` it is
    therefore evaluated in ``d = 1 - q``, summed from the other classes'
    probabilities (exact also when ``d`` is below float32's resolution of
    1)::

        D_JS = (d log 2 + (1 - d) log(1 - d) - (2 - d) log(1 - d/2)) / 2

    whose leading term ``d log 2 / 2`` carries the value and the gradient
    (relative accuracy ~1e-6 at any margin; tested against a high-precision
    reference). Finite, with finite gradients, at ``p_y -> 0`` and ``1``.
    """
    t = _terms(logits, labels, ignore_index, kwargs)
    log_q = t.log_p_label
    # d = sum of p_k over k != y, without the cancellation of 1 - q
    d = t.log_probs.exp().scatter(1, t.labels.unsqueeze(1), 0.0).sum(1)
    return js_of_label_prob(log_q.exp(), log_q, d).clamp_min(0.0) * t.valid


def js_of_label_prob(q: Tensor,
                     log_q: Tensor,
                     d: Tensor,
                     log1p_q: Optional[Tensor] = None) -> Tensor:
    """The JS divergence of :func:`js_loss` from the label's probability
    ``q``, its log and ``d = 1 - q`` summed from the other classes (the
    branch for ``q >= 1/2`` is evaluated in ``d``), before the loss clamps
    it at 0 (it can round below). ``log1p_q``: ``log1p(q)`` if known."""
    if log1p_q is None:
        log1p_q = torch.log1p(q)
    js_q = _LOG2 + 0.5 * (q * log_q - (1 + q) * log1p_q)
    # the branch not taken must stay finite (0 * log 0 -> NaN grads): it
    # reads d = 0 there (a clamp at 1/2 would also cut the gradient of the
    # pixels at exactly d = 1/2)
    d_c = torch.where(q < 0.5, torch.zeros_like(d), d)
    js_d = 0.5 * (
        d_c * _LOG2 + (1 - d_c) * torch.log1p(-d_c) -
        (2 - d_c) * torch.log1p(-0.5 * d_c))
    return torch.where(q < 0.5, js_q, js_d)


def mask_sph_loss(logits: Tensor,
                  labels: Tensor,
                  ignore_index: int = 255,
                  **kwargs) -> Tensor:
    """Masked spherical loss ``-1[argmax u = y] * u_y / ||u||_2``."""
    t = _terms(logits, labels, ignore_index, kwargs)
    u = t.logits
    u_y = u.gather(1, t.labels.unsqueeze(1)).squeeze(1)
    # sum of squares, not Tensor.norm(dim=1): the strided reduction over the
    # class dim is ~20x slower on the CPU; clamping before the sqrt keeps the
    # gradient finite (and zero) at all-zero logits
    norm = (u * u).sum(1).clamp_min(1e-24).sqrt()
    return -t.correct * (u_y / norm) * t.valid


def cos_loss(logits: Tensor,
             labels: Tensor,
             ignore_index: int = 255,
             **kwargs) -> Tensor:
    """Cosine loss ``1 - cos(p, e_y) = 1 - p_y / ||p||_2`` between the
    softmax output ``p`` and the one-hot label (PAdam-Cos, Halmosi et al.
    2024).

    The cosine depends only on the logit differences to the label::

        cos(p, e_y) = 1 / sqrt(1 + r),   r = sum_{k != y} exp(2 (u_k - u_y))

    and is evaluated as ``-expm1(-softplus(log r) / 2)`` with ``log r`` a
    log-sum-exp: the direct form rounds to exactly 0, with a zero gradient,
    once the label's logit margin exceeds about 8 (``r`` below float32's
    resolution of 1), i.e. on every confidently correct pixel; this one
    keeps value and gradient (relative accuracy ~1e-6) until ``r`` leaves
    float32's normal range (margins of about 45). Bounded in ``[0, 1)``;
    like ``js`` its gradient vanishes on confidently wrong pixels. 0 with a
    single class.
    """
    t = _terms(logits, labels, ignore_index, kwargs)
    u = t.logits
    if u.shape[1] == 1:
        return u.new_zeros(u.shape[0], *u.shape[2:])
    label = t.labels.unsqueeze(1)
    diff = 2 * (u - u.gather(1, label))
    # log r: the label's own term left out
    log_r = diff.scatter(1, label, float('-inf')).logsumexp(1)
    return -torch.expm1(-0.5 * F.softplus(log_r)) * t.valid


def mask_ce_bal_loss(logits: Tensor,
                     labels: Tensor,
                     ignore_index: int = 255,
                     class_weights: Optional[Tensor] = None,
                     **kwargs) -> Tensor:
    """Class-balanced masked CE ``w_y * mask_ce``.

    Without ``class_weights`` each image weighs its classes by inverse
    frequency of its own valid labels (see :func:`class_weights_from_counts`),
    so an image's objective never depends on the rest of the batch.
    """
    t = _terms(logits, labels, ignore_index, kwargs)
    w = label_weights(t.labels, t.valid, t.logits.shape[1], class_weights)
    return w * t.correct * t.ce * t.valid


def label_weights(safe: Tensor,
                  valid: Tensor,
                  num_classes: int,
                  class_weights: Optional[Tensor] = None) -> Tensor:
    """The ``(B, H, W)`` weight ``w_y`` of :func:`mask_ce_bal_loss` per
    pixel: ``class_weights[y]``, or without them each image's inverse label
    frequencies (``safe``: labels with ignored pixels set to a valid class;
    ``valid``: the pixels that count)."""
    if class_weights is None:
        counts = torch.zeros(
            safe.shape[0], num_classes,
            device=safe.device).scatter_add_(1, safe.flatten(1),
                                             valid.flatten(1).float())
        weights = class_weights_from_counts(counts)  # (B, K)
        return weights.gather(1, safe.flatten(1)).view_as(safe)
    class_weights = torch.as_tensor(
        class_weights, dtype=torch.float32, device=safe.device)
    if class_weights.shape != (num_classes, ):
        raise ValueError(
            f'class_weights must have shape ({num_classes},) for '
            f'{num_classes} classes, got {tuple(class_weights.shape)}')
    return class_weights[safe]


def class_weights_from_counts(counts: Tensor) -> Tensor:
    """Inverse-frequency class weights from label counts.

    Args:
        counts (Tensor): Pixel counts per class, shape ``(K,)`` (e.g. from
            the training labels) or ``(B, K)`` (one row per image).

    Returns:
        Tensor: Weights ``w_c = N / (C * n_c)`` for classes present
        (``N`` pixels, ``C`` classes present), 0 for absent classes, so the
        pixel-weighted mean weight is 1 and every present class carries the
        same total weight.
    """
    counts = counts.float()
    present = counts > 0
    total = counts.sum(-1, keepdim=True)
    n_present = present.sum(-1, keepdim=True).clamp_min(1)
    weights = total / (n_present * counts.clamp_min(1))
    return torch.where(present, weights, torch.zeros_like(weights))


#: name -> loss function ``fn(logits, labels, ignore_index, step,
#: total_steps, class_weights, pred=None, terms=None) -> (B, H, W)``;
#: ``pred`` (the argmax of the logits, if already computed) and ``terms``
#: (a :class:`PixelTerms` of the same logits) save recomputing shared terms
PIXEL_LOSSES: Dict[str, Callable[..., Tensor]] = {
    'ce': ce_loss,
    'bal_ce': bal_ce_loss,
    'cossim_ce': cossim_ce_loss,
    'mask_ce': mask_ce_loss,
    'js': js_loss,
    'mask_sph': mask_sph_loss,
    'mask_ce_bal': mask_ce_bal_loss,
    'cos': cos_loss,
}

LOSS_NAMES: Sequence[str] = tuple(PIXEL_LOSSES)


def _images_with(bad: Tensor) -> list:
    """Batch positions (at most 10) of the images with a True pixel."""
    return torch.nonzero(bad.flatten(1).any(1)).flatten().tolist()[:10]


def check_logits_labels(logits: Tensor, labels: Tensor,
                        ignore_index: int) -> None:
    """Raise a clear error if logits and labels do not fit together."""
    if logits.dim() != 4 or labels.dim() != 3 or \
            logits.shape[0] != labels.shape[0] or \
            logits.shape[2:] != labels.shape[1:]:
        raise ValueError(
            f'logits must be (B, K, H, W) and labels (B, H, W) with the same '
            f'B, H, W; got {tuple(logits.shape)} and {tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(
            f'labels must be an integer tensor, got {labels.dtype}')
    num_classes = logits.shape[1]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()[:10]
        raise ValueError(
            f'labels must be in [0, {num_classes - 1}] or ignore_index='
            f'{ignore_index}; found {values} (images '
            f'{_images_with(bad)}). '
            'Check num_classes and ignore_index (reduce_zero_label datasets '
            'use 255 for the dropped class).')


def check_loss_name(name: str) -> str:
    """Return ``name`` if it is a known loss, else raise a helpful error."""
    if name not in PIXEL_LOSSES:
        raise ValueError(f'unknown loss {name!r}; valid names are: ' +
                         ', '.join(PIXEL_LOSSES))
    return name


def pixel_loss(name: str,
               logits: Tensor,
               labels: Tensor,
               ignore_index: int = 255,
               step: Optional[int] = None,
               total_steps: Optional[int] = None,
               class_weights: Optional[Tensor] = None) -> Tensor:
    """Per-pixel attack loss (docs/attacks.md).

    Args:
        name (str): One of :data:`PIXEL_LOSSES`.
        logits (Tensor): ``(B, K, H, W)`` logits at label resolution.
        labels (Tensor): ``(B, H, W)`` integer labels.
        ignore_index (int): Label of pixels that take part in no loss.
        step (int, optional): Iteration ``1..total_steps`` of the current
            attack run (``bal_ce`` only).
        total_steps (int, optional): Length of the current run (``bal_ce``).
        class_weights (Tensor, optional): ``(K,)`` weights (``mask_ce_bal``).

    Returns:
        Tensor: ``(B, H, W)`` float32 loss map, exactly 0 on ignored pixels.
    """
    fn = PIXEL_LOSSES[check_loss_name(name)]
    check_logits_labels(logits, labels, ignore_index)
    return fn(
        logits,
        labels.long(),
        ignore_index=ignore_index,
        step=step,
        total_steps=total_steps,
        class_weights=class_weights)
