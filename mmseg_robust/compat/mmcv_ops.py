"""Pure-PyTorch stand-ins for the ``mmcv.ops`` names MMSeg imports eagerly.

MMSegmentation 1.2.x imports ``point_sample`` and ``sigmoid_focal_loss`` from
``mmcv.ops`` at module level. With ``mmcv-lite`` (no compiled ``mmcv._ext``)
that import fails, and with it ``import mmseg.models``. When, and only when,
``import mmcv.ops`` fails for that reason, :func:`apply` installs a small
replacement ``mmcv.ops`` that provides exactly those two functions, written
in plain PyTorch. Every other name behaves as a missing compiled op:

* ``hasattr(mmcv.ops, 'nms')`` is ``False`` and ``getattr(mmcv.ops, 'nms',
  None)`` is ``None`` (attribute access raises :class:`AttributeError`);
* ``from mmcv.ops import nms`` and ``import mmcv.ops.nms`` raise
  :class:`ModuleNotFoundError` (``name='mmcv._ext'``), which MMSeg's guarded
  imports (``cc_head``, ``psa_head``, ``point_head`` ...) catch, so they take
  their "op not available" branch as they were written to.

Nothing is touched when the compiled ops import fine. :func:`undo` removes the
replacement again.
"""
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

#: Names provided by the fallback ``mmcv.ops`` module.
FALLBACK_OPS = ('point_sample', 'sigmoid_focal_loss')

_FALLBACK_ATTR = '__mmseg_robust_fallback__'


def point_sample(input: Tensor,
                 points: Tensor,
                 align_corners: bool = False,
                 **kwargs) -> Tensor:
    """Sample ``input`` at normalised ``points`` (same contract as mmcv's op).

    Args:
        input (Tensor): Features of shape ``(N, C, H, W)``.
        points (Tensor): Coordinates in ``[0, 1] x [0, 1]``, shape
            ``(N, P, 2)`` or ``(N, Hg, Wg, 2)``, ordered ``(x, y)``.
        align_corners (bool): Passed to
            :func:`torch.nn.functional.grid_sample`.
        **kwargs: Further :func:`~torch.nn.functional.grid_sample` options.

    Returns:
        Tensor: ``(N, C, P)`` or ``(N, C, Hg, Wg)`` sampled features.
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(
        input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    if add_dim:
        output = output.squeeze(3)
    return output


def sigmoid_focal_loss(input: Tensor,
                       target: Tensor,
                       gamma: float = 2.0,
                       alpha: float = 0.25,
                       weight: Optional[Tensor] = None,
                       reduction: str = 'mean') -> Tensor:
    """Sigmoid focal loss with the semantics of mmcv's compiled op.

    Args:
        input (Tensor): Logits of shape ``(N, C)``.
        target (Tensor): Long labels of shape ``(N,)``; the value ``C`` marks a
            sample with no positive class (background).
        gamma (float): Focusing parameter.
        alpha (float): Weight of the positive term.
        weight (Tensor, optional): Per-class weights of shape ``(C,)``,
            applied to every entry of a sample according to its label.
        reduction (str): ``'none'``, ``'mean'`` (sum divided by ``N``, as mmcv
            does) or ``'sum'``.

    Returns:
        Tensor: The loss, ``(N, C)`` for ``reduction='none'``.
    """
    if reduction not in ('none', 'mean', 'sum'):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', "
                         f'got {reduction!r}')
    if input.dim() != 2 or target.dim() != 1 or \
            input.size(0) != target.size(0):
        raise ValueError('sigmoid_focal_loss expects input (N, C) and target '
                         f'(N,), got {tuple(input.shape)} and '
                         f'{tuple(target.shape)}')
    num_classes = input.size(1)
    # one-hot with an extra column for "background", then dropped
    one_hot = F.one_hot(target.long(), num_classes + 1)[:, :num_classes]
    one_hot = one_hot.to(input.dtype)
    prob = input.sigmoid()
    # stable log(sigmoid) terms
    log_p = F.logsigmoid(input)
    log_1mp = F.logsigmoid(-input)
    pos = -alpha * (1 - prob).pow(gamma) * log_p
    neg = -(1 - alpha) * prob.pow(gamma) * log_1mp
    loss = one_hot * pos + (1 - one_hot) * neg
    if weight is not None:
        if weight.dim() != 1 or weight.numel() != num_classes:
            raise ValueError('weight must have shape (C,) = '
                             f'({num_classes},), got {tuple(weight.shape)}')
        padded = torch.cat([weight, weight.new_ones(1)])
        loss = loss * padded[target.long()].unsqueeze(1)
    if reduction == 'mean':
        return loss.sum() / input.size(0)
    if reduction == 'sum':
        return loss.sum()
    return loss


def _missing_op_message(name: str) -> str:
    return (f'mmcv.ops.{name} needs the compiled mmcv ops (mmcv._ext), which '
            'are not installed (mmcv-lite). mmseg_robust only provides '
            f'pure-PyTorch {" and ".join(FALLBACK_OPS)}; install the full '
            '`mmcv` package to use this op.')


class _MissingOpsFinder:
    """Answers ``import mmcv.ops.<anything>`` with ``ModuleNotFoundError``.

    ``from mmcv.ops import nms`` first looks for the attribute; as it is
    missing and the fallback module is a package, Python then imports
    ``mmcv.ops.nms``, which lands here. The error names ``mmcv._ext``, not
    ``mmcv.ops.nms``, so that Python reports it instead of turning it into
    ``ImportError: cannot import name``.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith('mmcv.ops.') and fallback_installed():
            raise ModuleNotFoundError(
                _missing_op_message(fullname[len('mmcv.ops.'):]),
                name='mmcv._ext')
        return None

    def invalidate_caches(self) -> None:
        pass


_finder = _MissingOpsFinder()


def _make_fallback_module() -> types.ModuleType:
    module = types.ModuleType(
        'mmcv.ops', 'mmcv.ops replaced by mmseg_robust: only ' +
        ', '.join(FALLBACK_OPS) + ' are available (pure PyTorch).')
    module.point_sample = point_sample
    module.sigmoid_focal_loss = sigmoid_focal_loss
    module.__all__ = list(FALLBACK_OPS)
    # a package, so that `from mmcv.ops import X` falls back to importing
    # the submodule mmcv.ops.X, which _MissingOpsFinder refuses
    module.__path__ = []
    module.__spec__ = importlib.machinery.ModuleSpec(
        'mmcv.ops', None, is_package=True)
    setattr(module, _FALLBACK_ATTR, True)

    def __getattr__(name: str):
        # AttributeError: hasattr() is False and getattr(..., None) is None
        raise AttributeError(_missing_op_message(name))

    module.__getattr__ = __getattr__
    return module


def fallback_installed() -> bool:
    """Whether the pure-PyTorch ``mmcv.ops`` replacement is active."""
    return getattr(sys.modules.get('mmcv.ops'), _FALLBACK_ATTR, False)


def needed() -> Optional[str]:
    """``None`` if ``mmcv.ops`` cannot be imported for lack of the compiled
    extension, else why the fallback is not needed.

    Raises:
        ModuleNotFoundError: If ``mmcv.ops`` fails for another reason (a
            missing dependency that must surface).
    """
    if fallback_installed():
        return 'the fallback is already installed'
    if importlib.util.find_spec('mmcv') is None:
        return 'mmcv is not installed'
    if 'mmcv.ops' in sys.modules:
        return 'mmcv.ops is already imported'
    try:
        importlib.import_module('mmcv.ops')
        return 'the compiled mmcv ops import fine'
    except ModuleNotFoundError as err:
        # Only the missing compiled extension is ours to paper over.
        if not (err.name or '').startswith('mmcv._ext') and \
                'mmcv._ext' not in str(err):
            raise
    return None


def apply() -> str:
    """Install the fallback ``mmcv.ops`` (call only when :func:`needed`
    returned ``None``).

    Returns:
        str: What was done, for the one-time announcement.
    """
    # drop half-imported submodules of the failed import
    for name in [m for m in sys.modules if m.startswith('mmcv.ops.')]:
        del sys.modules[name]
    import mmcv
    module = _make_fallback_module()
    sys.modules['mmcv.ops'] = module
    mmcv.ops = module
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return ('the compiled mmcv ops (mmcv._ext) are missing (mmcv-lite?), so '
            'mmcv.ops is now a pure-PyTorch module with only point_sample and '
            'sigmoid_focal_loss, enough for MMSegmentation to import; other '
            'mmcv ops stay unavailable (install full mmcv for them)')


def undo() -> None:
    """Remove the fallback ``mmcv.ops`` (a later ``import mmcv.ops`` fails
    again as it does with mmcv-lite)."""
    sys.meta_path[:] = [f for f in sys.meta_path if f is not _finder]
    if fallback_installed():
        del sys.modules['mmcv.ops']
        mmcv = sys.modules.get('mmcv')
        if mmcv is not None and getattr(mmcv, 'ops', None) is not None and \
                getattr(mmcv.ops, _FALLBACK_ATTR, False):
            del mmcv.ops
