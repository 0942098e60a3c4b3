"""Input checks of the attacks: radii, iteration counts, images, labels and
masks, and the model's mode. Each public entry point validates once; the
attack loops trust what they get.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
import math
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = [
    'check_eps', 'check_radius', 'check_norm', 'check_eot', 'NORMS',
    'check_linf_only', 'check_n_iter', 'check_images', 'warn_if_training'
]

#: Threat models: ``'linf'`` (the paper's) and ``'l2'`` (issue #21).
NORMS = ('linf', 'l2')


def check_eps(eps: float, name: str = 'eps') -> float:
    """Validate an l_inf radius given as a fraction of the [0, 1] range."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be a number such as 8/255, '
                        f'got {eps!r}') from None
    if math.isnan(value) or value < 0 or value > 1:
        raise ValueError(
            f'{name}={eps!r} is not a valid l_inf radius: it must be in '
            f'[0, 1] as a fraction of the pixel range, e.g. {name}=8/255 '
            f'(= {8 / 255:.4f}). On the command line radii are given in '
            'units of 1/255 (--eps 8).')
    return value


def check_norm(norm: str) -> str:
    """Validate a threat model name (one of :data:`NORMS`)."""
    if norm not in NORMS:
        raise ValueError(f'norm must be one of {NORMS} (l_inf or l_2 ball '
                         f'around the image), got {norm!r}')
    return norm


def check_linf_only(norm: str, what: str) -> None:
    """Refuse ``norm='l2'`` for an attack that has only an l_inf version."""
    if check_norm(norm) != 'linf':
        raise ValueError(f'{what} is an l_inf attack, but norm={norm!r}; use '
                         'apgd, apgd_red_eps or pgd for l2')


def check_radius(eps: float, norm: str = 'linf', name: str = 'eps') -> float:
    """Validate a radius of the ``norm`` ball: an l_inf radius is a
    fraction of the pixel range in [0, 1] (:func:`check_eps`); an l_2
    radius is the l_2 norm of the perturbation of the [0, 1] image the
    model sees (any finite value >= 0; it grows with the square root of
    the number of pixels, docs/attacks.md, "The l2 threat model")."""
    if check_norm(norm) == 'linf':
        return check_eps(eps, name)
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f'{name} must be a number such as 0.5, '
                        f'got {eps!r}') from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f'{name}={eps!r} is not a valid l2 radius: it must be a finite '
            'number >= 0, the l2 norm of the perturbation of the [0, 1] '
            f'image (e.g. {name}=0.5)')
    return value


def check_eot(eot: int) -> int:
    """Validate the number of samples of expectation over transformation
    (gradients averaged over ``eot`` forward+backward passes)."""
    try:
        ok = not isinstance(eot, bool) and int(eot) == eot and eot >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'eot must be an integer >= 1 (gradient samples '
                         f'per step, 1 for deterministic models), got '
                         f'{eot!r}')
    return int(eot)


def check_n_iter(n_iter: int, minimum: int = 1, what: str = 'n_iter') -> int:
    """Validate an iteration count (an integer >= ``minimum``)."""
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < minimum:
        raise ValueError(f'{what} must be an integer >= {minimum}, '
                         f'got {n_iter!r}')
    return int(n_iter)


def check_images(x: Tensor,
                 y: Tensor,
                 mask: Optional[Tensor] = None) -> Optional[Tensor]:
    """Check images ``x`` (B, C, H, W) in [0, 1] and labels ``y`` (B, H', W').

    Returns the perturbation mask broadcast to ``(B, 1, H, W)`` bool, or
    ``None``.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError('x must be a (B, C, H, W) tensor, got '
                         f'{getattr(x, "shape", type(x))}')
    if not x.dtype.is_floating_point:
        raise TypeError(f'x must be a float tensor in [0, 1], got {x.dtype}; '
                        'convert uint8 images with x.float() / 255')
    if not isinstance(y, Tensor) or y.dim() != 3 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f'y must be a (B, H, W) label tensor with B={x.shape[0]} like x, '
            f'got {tuple(getattr(y, "shape", ()))}')
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f'y must be an integer tensor, got {y.dtype}')
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0
                      or x.max() > 1):
        raise ValueError(
            f'x must hold finite values in [0, 1], got range '
            f'[{x.min().item():.4g}, {x.max().item():.4g}]. Images in '
            '[0, 255] must be divided by 255 first.')
    if mask is None:
        return None
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    try:
        mask = mask.expand(x.shape[0], 1, *x.shape[2:])
    except RuntimeError:
        raise ValueError(f'mask of shape {tuple(mask.shape)} does not fit '
                         f'images of shape {tuple(x.shape)}') from None
    return mask


def warn_if_training(model: Callable[[Tensor], Tensor]) -> None:
    """AutoAttack-style warning for a model left in training mode."""
    if getattr(model, 'training', False):
        warnings.warn(
            'the attacked model is in training mode: dropout, drop-path and '
            'BatchNorm make its outputs stochastic and the attack unreliable.'
            ' Call model.eval() first.',
            stacklevel=3)
