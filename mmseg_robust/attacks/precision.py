"""Precision of the attacks' model calls: ``amp`` settings, autocast, and
the gradient scaling that keeps half-precision input gradients from
underflowing (docs/attacks.md, "Precision").

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
import warnings
from contextlib import nullcontext
from typing import Dict, Optional, Union

import torch
from torch import Tensor

__all__ = [
    'AmpLike', 'RESULT_PRECISIONS', 'check_amp', 'resolve_amp',
    'cpu_autocast_supports', 'autocast_to', 'amp_name', 'autocast_enabled',
    'GRAD_EXP', 'GRAD_TARGET_EXP', 'GRAD_EXP_BACKOFF', 'GRAD_EXP_MIN',
    'GRAD_EXP_MAX', 'scale_logit_grad', 'logit_grad_shift', 'ldexp_rows'
]

#: Precision of the model calls: ``False`` / ``None`` / ``'fp32'`` float32;
#: ``'fp16'``, ``'bf16'`` or a ``torch.dtype`` autocast to that type;
#: ``True`` / ``'auto'`` bfloat16 where the device supports it, else float16.
AmpLike = Union[None, bool, str, torch.dtype]

_AMP_NAMES = {
    'fp16': torch.float16,
    'float16': torch.float16,
    'half': torch.float16,
    'bf16': torch.bfloat16,
    'bfloat16': torch.bfloat16,
    'fp32': None,
    'float32': None,
}

#: ``result_precision`` values: ``'fp32'`` re-evaluates the points an attack
#: returns in float32; ``'amp'`` keeps the attack's own evaluations.
RESULT_PRECISIONS = ('fp32', 'amp')


def check_amp(amp: AmpLike) -> AmpLike:
    """Validate an ``amp`` setting (see :data:`AmpLike`) without resolving
    ``'auto'`` (which depends on the device)."""
    if amp is None or isinstance(amp, (bool, torch.dtype)):
        if isinstance(amp, torch.dtype) and amp not in (torch.float16,
                                                        torch.bfloat16,
                                                        torch.float32):
            raise ValueError(f'amp dtype must be float16 or bfloat16, got '
                             f'{amp}')
        return amp
    name = str(amp).lower()
    if name != 'auto' and name not in _AMP_NAMES:
        raise ValueError(f'amp={amp!r} is not a precision: use fp16, bf16, '
                         'auto (bf16 where the device supports it) or fp32')
    return name


def resolve_amp(amp: AmpLike,
                device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """The autocast dtype of an ``amp`` setting on ``device`` (``None``:
    float32, no autocast).

    ``True`` / ``'auto'`` is bfloat16 on the CPU and on CUDA devices that
    support it (Ampere and newer), float16 on older GPUs. bfloat16 has
    float32's range, float16 needs the gradient scaling of
    :class:`Objective` (docs/attacks.md, "Precision").
    """
    amp = check_amp(amp)
    device = torch.device(device)
    if amp is None or amp is False:
        return None
    if amp is True or amp == 'auto':
        if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    dtype = amp if isinstance(amp, torch.dtype) else _AMP_NAMES[amp]
    if dtype is None or dtype == torch.float32:
        return None
    if device.type == 'cpu' and not cpu_autocast_supports(dtype):
        raise ValueError(
            f'torch {torch.__version__} autocasts the CPU to bfloat16 only '
            f'(float16 needs torch >= 2.2): use bf16 (--amp bf16)')
    return dtype


_CPU_AUTOCAST: Dict[torch.dtype, bool] = {}


def cpu_autocast_supports(dtype: torch.dtype) -> bool:
    """Whether this torch's CPU autocast takes ``dtype`` (float16 since
    torch 2.2; bfloat16 always)."""
    if dtype not in _CPU_AUTOCAST:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try:
                with torch.autocast('cpu', dtype=dtype):
                    ok = torch.is_autocast_cpu_enabled() and \
                        torch.get_autocast_cpu_dtype() == dtype
            except RuntimeError:
                ok = False
        _CPU_AUTOCAST[dtype] = ok
    return _CPU_AUTOCAST[dtype]


def autocast_to(device: Union[str, torch.device],
                dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a null context
    for ``None`` (float32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def amp_name(dtype: Optional[torch.dtype]) -> str:
    """``'fp32'``, ``'fp16'`` or ``'bf16'`` for an autocast dtype."""
    return {None: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16'}[dtype]


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` in the calling context
    (e.g. inside ``AmpOptimWrapper.optim_context``)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


#: Under reduced precision the gradient of the logits is scaled, per image,
#: by a power of two that brings its largest entry into [2**(e - 1), 2**e)
#: before it enters the half-precision backward pass, ``e`` starting at
#: GRAD_EXP. The pixel mean makes each pixel's gradient at most 1 / (H W)
#: (3.8e-6 at 512 x 512), below float16's normal range (6.1e-5); scaled,
#: the image's gradient is representable down to 2**-(24 + e) of its
#: largest entry. Powers of two are exact, and the attacks use only the
#: sign. Measured in docs/benchmarks.md ("Precision").
GRAD_EXP = 4
#: After each evaluation ``e`` is adjusted so that the largest entry of the
#: image's input gradient would be about 2**GRAD_TARGET_EXP, 16 times below
#: float16's largest value (65504): the backward pass amplifies the
#: logits' gradient by a model-dependent factor (measured 6-400 on the
#: package's models, docs/benchmarks.md), which this learns per image.
GRAD_TARGET_EXP = 12
#: An image whose input gradient overflowed anyway gets a zero gradient for
#: that step and ``e`` lowered by this much, as a loss scaler backs off.
GRAD_EXP_BACKOFF = 4
#: Range of ``e``.
GRAD_EXP_MIN, GRAD_EXP_MAX = -24, 16


def logit_grad_shift(grad: Tensor,
                     exp: Union[int, Tensor] = GRAD_EXP) -> Tensor:
    """``(B,)`` the power of two :func:`scale_logit_grad` multiplies each
    image's ``grad`` by (0 where it is zero or not finite)."""
    amax = grad.detach().abs().flatten(1).amax(1)
    _, e = torch.frexp(amax)
    ok = torch.isfinite(amax) & (amax > 0)
    return torch.where(ok, exp - e, torch.zeros_like(e))


def ldexp_rows(t: Tensor,
               shift: Tensor,
               out: Optional[Tensor] = None) -> Tensor:
    """``t * 2**shift`` per image (``shift`` of shape ``(B,)``), exact;
    ``out=t`` scales in place."""
    return torch.ldexp(t, shift.view(-1, *([1] * (t.dim() - 1))), out=out)


def scale_logit_grad(grad: Tensor,
                     exp: Union[int, Tensor] = GRAD_EXP) -> Tensor:
    """``grad * 2**k`` per image with ``k`` such that the largest entry of
    each image lies in ``[2**(exp - 1), 2**exp)`` (``exp`` an int or one
    per image); images whose gradient is zero or not finite are left as
    they are."""
    return ldexp_rows(grad, logit_grad_shift(grad, exp))
