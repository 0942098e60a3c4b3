"""Rename ConvNeXt checkpoints of any common layout to mmpretrain's layout.

The robust ImageNet ConvNeXts (docs/training.md) are stored in timm's key
layout, with a ConvStem (``stem.stem.0/1/3/4``) for the "CvSt" models and
``module.`` / ``base_model.`` prefixes from their training wrappers.
:func:`convert_robust_convnext` renames such checkpoints (and plain timm or
mmpretrain ConvNeXt checkpoints) to the parameter names of mmpretrain's
``ConvNeXt`` / :class:`~mmseg_robust.models.RobustConvNeXt`;
:class:`~mmseg_robust.models.RobustPretrained` is the MMEngine initialiser
that loads them, ``tools/convert_robust_convnext.py`` the command line.

Key mapping from timm (after removing wrapper prefixes)::

    stem.0 / stem.1               -> downsample_layers.0.0 / .1  (patch stem)
    stem.stem.{0,1,3,4}           -> downsample_layers.0.{0,1,3,4} (ConvStem)
    stages.i.downsample.{0,1}     -> downsample_layers.i.{0,1}     (i >= 1)
    stages.i.blocks.j.conv_dw     -> stages.i.j.depthwise_conv
    stages.i.blocks.j.norm        -> stages.i.j.norm
    stages.i.blocks.j.mlp.fc1/fc2 -> stages.i.j.pointwise_conv1/2
    stages.i.blocks.j.gamma       -> stages.i.j.gamma
    head.norm (or norm_pre)       -> norm3  (final norm, as mmpretrain's
                                             own converters do)
    head.fc, other head.*         -> ignored (classifier)

and from the original (facebookresearch) ConvNeXt layout, also used by the
backbones inside the paper's released segmentation models (optionally under
``backbone.``; the other parts of such a model are ignored)::

    downsample_layers.0.stem.{0,1,3,4} -> downsample_layers.0.{0,1,3,4}
                                          (the authors' ConvStem)
    downsample_layers.i.{0,1}     -> downsample_layers.i.{0,1}
    stages.i.j.dwconv             -> stages.i.j.depthwise_conv
    stages.i.j.pwconv1/pwconv2    -> stages.i.j.pointwise_conv1/2
    stages.i.j.norm / gamma       -> stages.i.j.norm / gamma
    norm{0..3}                    -> norm{0..3}   (segmentation backbones)
    norm                          -> norm3        (classifier's final norm)
    head.*                        -> ignored (classifier)
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from .state_dicts import find_tensors, format_keys, strip_wrappers

__all__ = ['convert_robust_convnext', 'ConvNeXtConversion']

# the original ConvNeXt (also the backbone of the paper's UPerNet models):
# its block names (dwconv, pwconv1/2) or the authors' ConvStem wrapper
_ORIGINAL_KEY = re.compile(
    r'^(backbone\.)?(stages\.\d+\.\d+\.(dwconv|pwconv1|pwconv2)\.|'
    r'downsample_layers\.0\.stem\.)')
_MMPRETRAIN_KEY = re.compile(
    r'^(backbone\.)?(downsample_layers\.\d+\.|stages\.\d+\.\d+\.)')
_TIMM_KEY = re.compile(r'^(stem\.|stages\.\d+\.(blocks|downsample)\.)')
_MMPRETRAIN_BACKBONE_KEY = re.compile(
    r'^(downsample_layers\.\d+|stages\.\d+\.\d+|norm\d+)\.')

_BLOCK = r'^stages\.(\d+)\.blocks\.(\d+)\.'
_TIMM_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r'^stem\.stem\.([0134])\.'), r'downsample_layers.0.\1.'),
    (re.compile(r'^stem\.([01])\.'), r'downsample_layers.0.\1.'),
    (re.compile(r'^stages\.([1-9]\d*)\.downsample\.([01])\.'),
     r'downsample_layers.\1.\2.'),
    (re.compile(_BLOCK + r'conv_dw\.'), r'stages.\1.\2.depthwise_conv.'),
    (re.compile(_BLOCK + r'norm\.'), r'stages.\1.\2.norm.'),
    (re.compile(_BLOCK + r'mlp\.fc1\.'), r'stages.\1.\2.pointwise_conv1.'),
    (re.compile(_BLOCK + r'mlp\.fc2\.'), r'stages.\1.\2.pointwise_conv2.'),
    (re.compile(_BLOCK + r'gamma$'), r'stages.\1.\2.gamma'),
    (re.compile(r'^head\.norm\.'), 'norm3.'),
    (re.compile(r'^norm_pre\.'), 'norm3.'),
]
_ORIGINAL_BLOCK = r'^stages\.(\d+)\.(\d+)\.'
_ORIGINAL_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r'^downsample_layers\.0\.stem\.([0134])\.'),
     r'downsample_layers.0.\1.'),
    (re.compile(r'^downsample_layers\.(\d+)\.([01])\.'),
     r'downsample_layers.\1.\2.'),
    (re.compile(_ORIGINAL_BLOCK + r'dwconv\.'),
     r'stages.\1.\2.depthwise_conv.'),
    (re.compile(_ORIGINAL_BLOCK + r'norm\.'), r'stages.\1.\2.norm.'),
    (re.compile(_ORIGINAL_BLOCK + r'pwconv1\.'),
     r'stages.\1.\2.pointwise_conv1.'),
    (re.compile(_ORIGINAL_BLOCK + r'pwconv2\.'),
     r'stages.\1.\2.pointwise_conv2.'),
    (re.compile(_ORIGINAL_BLOCK + r'gamma$'), r'stages.\1.\2.gamma'),
    (re.compile(r'^norm(\d)\.'), r'norm\1.'),
    (re.compile(r'^norm\.'), 'norm3.'),
]


@dataclass
class ConvNeXtConversion:
    """What :func:`convert_robust_convnext` did.

    Attributes:
        state_dict (OrderedDict): Weights in mmpretrain's ConvNeXt layout,
            without a ``backbone.`` prefix.
        layout (str): Detected source layout, ``'timm'``, ``'original'``
            or ``'mmpretrain'``.
        stem (str): Stem found in the checkpoint, ``'patch'`` or ``'conv'``.
        ignored (list[str]): Source keys deliberately dropped (classifier
            head, non-backbone parts), after removing wrapper prefixes.
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    layout: str
    stem: str
    ignored: List[str] = field(default_factory=list)


def _convert_timm(state_dict: Dict[str, torch.Tensor]) -> ConvNeXtConversion:
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    ignored, unknown = [], []
    for key, value in state_dict.items():
        for pattern, repl in _TIMM_RULES:
            new_key, n = pattern.subn(repl, key)
            if n:
                if new_key in out:
                    raise ValueError(
                        f'Checkpoint keys collide on {new_key!r} (both a '
                        'patch stem and a ConvStem, or head.norm and '
                        'norm_pre?)')
                out[new_key] = value
                break
        else:
            if key.startswith('head.'):
                ignored.append(key)
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(
            'Unrecognised keys in a timm-layout ConvNeXt checkpoint (only '
            'ConvNeXt v1 with a patch stem or the robust ConvStem is '
            f'supported): {format_keys(unknown)}')
    stem = 'conv' if any(k.startswith('stem.stem.') for k in state_dict) \
        else 'patch'
    return ConvNeXtConversion(out, 'timm', stem, ignored)


def _convert_original(
        state_dict: Dict[str, torch.Tensor]) -> ConvNeXtConversion:
    has_backbone = any(k.startswith('backbone.') for k in state_dict)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    ignored, unknown = [], []
    for key, value in state_dict.items():
        name = key
        if has_backbone:
            # a whole segmentor (e.g. the paper's UPerNet): its backbone only
            if not key.startswith('backbone.'):
                ignored.append(key)
                continue
            name = key[len('backbone.'):]
        for pattern, repl in _ORIGINAL_RULES:
            new_key, n = pattern.subn(repl, name)
            if n:
                if new_key in out:
                    raise ValueError(
                        f'Checkpoint keys collide on {new_key!r} (both a '
                        'final norm `norm` and an output norm `norm3`?)')
                out[new_key] = value
                break
        else:
            if name.startswith('head.'):
                ignored.append(key)
            else:
                unknown.append(key)
    if unknown:
        raise ValueError(
            'Unrecognised keys in an original-layout ConvNeXt checkpoint '
            '(expected downsample_layers.*, stages.N.M.{dwconv,norm,pwconv1,'
            f'pwconv2,gamma}}, norm*, head.*): {format_keys(unknown)}')
    stem = 'conv' if 'downsample_layers.0.3.weight' in out else 'patch'
    return ConvNeXtConversion(out, 'original', stem, ignored)


def _convert_mmpretrain(
        state_dict: Dict[str, torch.Tensor]) -> ConvNeXtConversion:
    has_backbone = any(k.startswith('backbone.') for k in state_dict)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    ignored = []
    for key, value in state_dict.items():
        if has_backbone:
            # a whole classifier/segmentor: keep only its backbone
            if not key.startswith('backbone.'):
                ignored.append(key)
                continue
            key = key[len('backbone.'):]
        if _MMPRETRAIN_BACKBONE_KEY.match(key):
            out[key] = value
        else:
            ignored.append(('backbone.' if has_backbone else '') + key)
    stem = 'conv' if 'downsample_layers.0.3.weight' in out else 'patch'
    return ConvNeXtConversion(out, 'mmpretrain', stem, ignored)


def convert_robust_convnext(
    state_dict: Mapping[str, Any],
    prefix: Optional[str] = None,
    return_info: bool = False
) -> Union['OrderedDict[str, torch.Tensor]', ConvNeXtConversion]:
    """Rename a ConvNeXt checkpoint to mmpretrain's ConvNeXt layout.

    Accepts (a) timm's layout, (b) the robust ConvNeXts' layout (timm's with
    the ConvStem ``stem.stem.*``), (c) the original (facebookresearch)
    layout, also the backbone of the paper's released UPerNet models (with
    their ConvStem ``downsample_layers.0.stem.*``), and (d) mmpretrain's
    layout; all possibly prefixed by any combination of ``module.``,
    ``base_model.`` and ``_orig_mod.``; (c) and (d) bare or as a whole model
    with a ``backbone.`` prefix (its other parts are ignored). The dict
    may be the state dict itself or a checkpoint holding it under
    ``state_dict``, ``model`` or ``state_dict_ema`` (first found wins).
    Classifier heads are dropped; timm's final norm ``head.norm`` becomes
    ``norm3`` as in mmpretrain's own ConvNeXt checkpoints.

    Args:
        state_dict (Mapping): A state dict or a checkpoint dict.
        prefix (str, optional): Keep only keys starting with this prefix
            (matched after removing wrapper prefixes) and remove it, e.g.
            ``'encoder.'`` for a backbone nested in a bigger model.
        return_info (bool): Return a :class:`ConvNeXtConversion` with the
            detected layout, stem and ignored keys instead of the dict.

    Returns:
        OrderedDict | ConvNeXtConversion: Tensors keyed like
        ``RobustConvNeXt.state_dict()`` (no ``backbone.`` prefix).

    Raises:
        ValueError: If the layout is not recognised, or keys of a
            recognised layout cannot be mapped.
    """
    tensors = find_tensors(state_dict)
    flat = strip_wrappers(tensors)
    if prefix:
        flat = OrderedDict((k[len(prefix):], v) for k, v in flat.items()
                           if k.startswith(prefix))
        if not flat:
            raise ValueError(f'No checkpoint key starts with prefix '
                             f'{prefix!r}; keys: {format_keys(tensors)}')
    if any(_ORIGINAL_KEY.match(k) for k in flat):
        result = _convert_original(flat)
    elif any(_MMPRETRAIN_KEY.match(k) for k in flat):
        result = _convert_mmpretrain(flat)
    elif any(_TIMM_KEY.match(k) for k in flat):
        result = _convert_timm(flat)
    else:
        raise ValueError(
            'Unrecognised checkpoint layout: expected a timm ConvNeXt '
            '(stem.*, stages.N.blocks.M.*), a robust ConvNeXt (stem.stem.*), '
            'an original ConvNeXt (downsample_layers.*, stages.N.M.dwconv.*) '
            'or an mmpretrain ConvNeXt (downsample_layers.*, '
            'stages.N.M.depthwise_conv.*), optionally under backbone.; '
            f'keys: {format_keys(flat)}')
    return result if return_info else result.state_dict
