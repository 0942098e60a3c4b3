"""Convert the paper's released PIR-AT segmentation checkpoints to MMSeg.

The authors of the paper (Croce, Singh & Hein, 2023) publish their
adversarially trained (PIR-AT) models as plain ``state_dict`` files of their
own model classes (repository ``nmndeep/Robust-Segmentation``):

**UPerNet + ConvNeXt-T/S** (``UperNetForSemanticSegmentation``): the
backbone in the original ConvNeXt layout, with the convolutional stem
("CvSt") as ``downsample_layers.0.stem.{0,1,3,4}``, and a UPerNet head in
the Hugging Face naming::

    backbone.downsample_layers.0.stem.{0,1,3,4}   (or .0.{0,1}: patch stem)
    backbone.downsample_layers.{1,2,3}.{0,1}
    backbone.stages.i.j.{dwconv,norm,pwconv1,pwconv2}.*, .gamma
    backbone.norm{0,1,2,3}
    decode_head.psp_modules.{0..3}.1.{conv,batch_norm}
    decode_head.{bottleneck,fpn_bottleneck}.{conv,batch_norm}
    decode_head.{lateral_convs,fpn_convs}.{0,1,2}.{conv,batch_norm}
    decode_head.classifier
    auxiliary_head.convs.0.{conv,batch_norm}, auxiliary_head.classifier

which becomes MMSeg's ``EncoderDecoder`` with
:class:`~mmseg_robust.models.RobustConvNeXt` (mmpretrain names, see
:func:`~mmseg_robust.converters.convert_robust_convnext`), ``UPerHead``
(``batch_norm`` -> ``bn``, ``classifier`` -> ``conv_seg``) and ``FCNHead``.

**Segmenter ViT-S** (``SegMenter``, after R. Strudel's Segmenter): a ViT
encoder and a mask-transformer decoder::

    encoder.{patch_embed.proj, cls_token, pos_embed, norm, head}
    encoder.blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}
    decoder.{proj_dec, cls_emb, decoder_norm, mask_norm,
             proj_patch, proj_classes}
    decoder.blocks.i.{...as the encoder's}

which becomes MMSeg's ``VisionTransformer`` + ``SegmenterMaskTransformerHead``
(``qkv`` -> ``attn.attn.in_proj_*``, ``proj`` -> ``attn.attn.out_proj``,
``norm1/2`` -> ``ln1/2``, ``mlp.fc1/fc2`` -> ``ffn.layers.0.0/ffn.layers.1``,
the final ``norm`` -> ``ln1``; ``proj_patch``/``proj_classes``, applied as
``x @ P``, become the bias-free linear layers ``patch_proj``/``classes_proj``
with weight ``P^T``). The encoder's ImageNet classifier ``encoder.head`` is
not used for segmentation and is dropped.

:func:`convert_pir_at` checks that a file has exactly the keys of one of
these models (any depth; ``module.`` prefixes allowed) and says which keys
were expected and which were found when it does not.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .robust_convnext import convert_robust_convnext
from .state_dicts import count_keys, find_tensors, format_keys, strip_wrappers

__all__ = [
    'PIRATConversion', 'convert_pir_at', 'upernet_convnext_keys',
    'segmenter_keys', 'CONVNEXT_DEPTHS'
]

# named depths of the released backbones
CONVNEXT_DEPTHS = {(3, 3, 9, 3): 'convnext-t', (3, 3, 27, 3): 'convnext-s'}
_VIT_ARCHS = {(384, 12): 'vit-s'}  # (width, layers) of ViT-S/16

_CONV_BN = ('conv.weight', 'batch_norm.weight', 'batch_norm.bias',
            'batch_norm.running_mean', 'batch_norm.running_var',
            'batch_norm.num_batches_tracked')
_BLOCK = ('dwconv.weight', 'dwconv.bias', 'norm.weight', 'norm.bias',
          'pwconv1.weight', 'pwconv1.bias', 'pwconv2.weight', 'pwconv2.bias',
          'gamma')
_VIT_BLOCK = ('norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
              'attn.proj.weight', 'attn.proj.bias', 'norm2.weight',
              'norm2.bias', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight',
              'mlp.fc2.bias')
_WB = ('weight', 'bias')
# num_batches_tracked is not used in eval mode; old state dicts may lack it
_OPTIONAL = re.compile(r'\.num_batches_tracked$')

_HEAD_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r'^((?:decode|auxiliary)_head\..*)\.batch_norm\.'), r'\1.bn.'),
    (re.compile(r'^((?:decode|auxiliary)_head)\.classifier\.'),
     r'\1.conv_seg.'),
]
_VIT_RULES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r'\.norm1\.'), '.ln1.'),
    (re.compile(r'\.norm2\.'), '.ln2.'),
    (re.compile(r'\.attn\.qkv\.(weight|bias)$'), r'.attn.attn.in_proj_\1'),
    (re.compile(r'\.attn\.proj\.'), '.attn.attn.out_proj.'),
    (re.compile(r'\.mlp\.fc1\.'), '.ffn.layers.0.0.'),
    (re.compile(r'\.mlp\.fc2\.'), '.ffn.layers.1.'),
]


@dataclass
class PIRATConversion:
    """What :func:`convert_pir_at` found and produced.

    Attributes:
        state_dict (OrderedDict): MMSeg keys (``backbone.``,
            ``decode_head.``, ``auxiliary_head.``) and tensors.
        model (str): ``'upernet-convnext'`` or ``'segmenter-vit'``.
        arch (str): ``'convnext-t'``, ``'convnext-s'``, ``'vit-s'``, or a
            description of other sizes (e.g. ``'convnext depths (1, 1, 2,
            1)'``).
        num_classes (int): Output classes (21: PASCAL-VOC with background,
            151: ADE20K with "other").
        stem (str, optional): ConvNeXt stem, ``'conv'`` or ``'patch'``.
        depths (tuple): Blocks per ConvNeXt stage, or ``(encoder layers,
            decoder layers)`` of a Segmenter.
        ignored (list[str]): Source keys not carried over.
        filled (list[str]): MMSeg keys absent from the source and filled
            with a default (``num_batches_tracked`` counters, unused in
            evaluation).
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    model: str
    arch: str
    num_classes: int
    stem: Optional[str] = None
    depths: Tuple[int, ...] = ()
    ignored: List[str] = field(default_factory=list)
    filled: List[str] = field(default_factory=list)


def _indices(keys: Sequence[str], pattern: str) -> List[int]:
    """Sorted distinct integers captured by ``pattern`` in ``keys``."""
    regex = re.compile(pattern)
    return sorted(
        {int(m.group(1))
         for k in keys
         for m in [regex.match(k)] if m})


def _count(keys: Sequence[str], pattern: str, what: str) -> int:
    """Number of consecutive indices 0..n-1 of ``pattern`` in ``keys``."""
    found = _indices(keys, pattern)
    if found != list(range(len(found))):
        raise ValueError(f'{what}: expected consecutive indices 0..n-1, '
                         f'found {found}')
    return len(found)


def upernet_convnext_keys(depths: Sequence[int], stem: str) -> List[str]:
    """The keys of the authors' ``UperNetForSemanticSegmentation``.

    Args:
        depths (Sequence[int]): Blocks in each of the 4 ConvNeXt stages.
        stem (str): ``'conv'`` (CvSt) or ``'patch'``.

    Returns:
        list[str]: Every key of its ``state_dict`` (in the authors' names).
    """
    keys = []
    if stem == 'conv':
        keys += [
            f'backbone.downsample_layers.0.stem.{i}.{p}' for i in (0, 1, 3, 4)
            for p in _WB
        ]
    else:
        keys += [
            f'backbone.downsample_layers.0.{i}.{p}' for i in (0, 1)
            for p in _WB
        ]
    keys += [
        f'backbone.downsample_layers.{i}.{j}.{p}' for i in (1, 2, 3)
        for j in (0, 1) for p in _WB
    ]
    keys += [
        f'backbone.stages.{i}.{j}.{p}' for i, d in enumerate(depths)
        for j in range(d) for p in _BLOCK
    ]
    keys += [f'backbone.norm{i}.{p}' for i in range(4) for p in _WB]
    modules = [f'decode_head.psp_modules.{i}.1' for i in range(4)]
    modules += ['decode_head.bottleneck']
    modules += [
        f'decode_head.{m}.{i}' for m in ('lateral_convs', 'fpn_convs')
        for i in range(3)
    ]
    modules += ['decode_head.fpn_bottleneck', 'auxiliary_head.convs.0']
    keys += [f'{m}.{p}' for m in modules for p in _CONV_BN]
    keys += [
        f'{h}.classifier.{p}' for h in ('decode_head', 'auxiliary_head')
        for p in _WB
    ]
    return keys


def segmenter_keys(encoder_layers: int, decoder_layers: int) -> List[str]:
    """The keys of the authors' ``SegMenter`` (ViT + mask transformer),
    without the optional encoder classifier ``encoder.head``."""
    keys = [
        'encoder.patch_embed.proj.weight', 'encoder.patch_embed.proj.bias',
        'encoder.cls_token', 'encoder.pos_embed', 'encoder.norm.weight',
        'encoder.norm.bias'
    ]
    keys += [
        f'encoder.blocks.{i}.{p}' for i in range(encoder_layers)
        for p in _VIT_BLOCK
    ]
    keys += [
        'decoder.cls_emb', 'decoder.proj_dec.weight', 'decoder.proj_dec.bias',
        'decoder.proj_patch', 'decoder.proj_classes',
        'decoder.decoder_norm.weight', 'decoder.decoder_norm.bias',
        'decoder.mask_norm.weight', 'decoder.mask_norm.bias'
    ]
    keys += [
        f'decoder.blocks.{i}.{p}' for i in range(decoder_layers)
        for p in _VIT_BLOCK
    ]
    return keys


def _check_keys(found: Sequence[str],
                expected: Sequence[str],
                what: str,
                optional: Sequence[str] = ()) -> List[str]:
    """Raise if ``found`` differs from ``expected``; return the expected
    keys that are missing but optional."""
    found_set, expected_set = set(found), set(expected)
    missing = [k for k in expected if k not in found_set]
    absent_ok = [k for k in missing if _OPTIONAL.search(k)]
    missing = [k for k in missing if not _OPTIONAL.search(k)]
    unexpected = [
        k for k in found if k not in expected_set and k not in optional
    ]
    if missing or unexpected:
        lines = [
            f'the file looks like a released {what} but its keys differ '
            'from the published layout (another model, or an edited '
            'file?):'
        ]
        if missing:
            lines.append(count_keys(missing, 'expected keys are missing'))
        if unexpected:
            lines.append(count_keys(unexpected, 'keys were not expected'))
        lines.append(f'expected {len(expected)} keys such as '
                     f'{format_keys(list(expected), 6)}; found '
                     f'{len(found)} such as {format_keys(list(found), 6)}')
        raise ValueError('\n  '.join(lines))
    return absent_ok


def _fill_counters(out: 'OrderedDict[str, torch.Tensor]',
                   absent: Sequence[str], rename) -> List[str]:
    filled = []
    for key in absent:
        new = rename(key)
        out[new] = torch.tensor(0, dtype=torch.long)
        filled.append(new)
    return filled


def _rename(key: str, rules: List[Tuple[re.Pattern, str]]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def _convert_upernet(sd: Dict[str, torch.Tensor]) -> PIRATConversion:
    keys = list(sd)
    stem = 'conv' if any(
        k.startswith('backbone.downsample_layers.0.stem.') for k in keys) \
        else 'patch'
    n_stages = _count(keys, r'^backbone\.stages\.(\d+)\.', 'backbone stages')
    if n_stages != 4:
        raise ValueError(f'a ConvNeXt backbone has 4 stages, this file has '
                         f'{n_stages} (backbone.stages.N)')
    depths = tuple(
        _count(keys, rf'^backbone\.stages\.{i}\.(\d+)\.',
               f'blocks of stage {i}') for i in range(4))
    absent = _check_keys(keys, upernet_convnext_keys(depths, stem),
                         'UPerNet + ConvNeXt checkpoint')

    backbone = convert_robust_convnext(
        {
            k: v
            for k, v in sd.items() if k.startswith('backbone.')
        },
        return_info=True)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict(
        ('backbone.' + k, v) for k, v in backbone.state_dict.items())
    for key, value in sd.items():
        if not key.startswith('backbone.'):
            out[_rename(key, _HEAD_RULES)] = value
    filled = _fill_counters(out, absent, lambda k: _rename(k, _HEAD_RULES))

    num_classes = int(sd['decode_head.classifier.weight'].shape[0])
    aux_classes = int(sd['auxiliary_head.classifier.weight'].shape[0])
    if aux_classes != num_classes:
        raise ValueError(
            f'decode_head.classifier has {num_classes} classes but '
            f'auxiliary_head.classifier {aux_classes}')
    arch = CONVNEXT_DEPTHS.get(depths, f'convnext depths {depths}')
    return PIRATConversion(out, 'upernet-convnext', arch, num_classes, stem,
                           depths, [], filled)


def _convert_segmenter(sd: Dict[str, torch.Tensor]) -> PIRATConversion:
    keys = list(sd)
    n_enc = _count(keys, r'^encoder\.blocks\.(\d+)\.', 'encoder blocks')
    n_dec = _count(keys, r'^decoder\.blocks\.(\d+)\.', 'decoder blocks')
    optional = ('encoder.head.weight', 'encoder.head.bias')
    _check_keys(keys, segmenter_keys(n_enc, n_dec), 'Segmenter checkpoint',
                optional)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    ignored = []
    for key, value in sd.items():
        if key in optional:
            ignored.append(key)
            continue
        if key.startswith('encoder.'):
            name = key[len('encoder.'):]
            if name == 'patch_embed.proj.weight':
                name = 'patch_embed.projection.weight'
            elif name == 'patch_embed.proj.bias':
                name = 'patch_embed.projection.bias'
            elif name.startswith('norm.'):
                name = 'ln1.' + name[len('norm.'):]
            elif name.startswith('blocks.'):
                name = _rename('layers.' + name[len('blocks.'):], _VIT_RULES)
            out['backbone.' + name] = value
            continue
        name = key[len('decoder.'):]
        if name == 'proj_patch':
            out['decode_head.patch_proj.weight'] = value.t().contiguous()
            continue
        if name == 'proj_classes':
            out['decode_head.classes_proj.weight'] = value.t().contiguous()
            continue
        if name.startswith('proj_dec.'):
            name = 'dec_proj.' + name[len('proj_dec.'):]
        elif name.startswith('blocks.'):
            name = _rename('layers.' + name[len('blocks.'):], _VIT_RULES)
        out['decode_head.' + name] = value

    num_classes = int(sd['decoder.cls_emb'].shape[1])
    width = int(sd['encoder.cls_token'].shape[-1])
    arch = _VIT_ARCHS.get((width, n_enc), f'vit width {width}, {n_enc} layers')
    return PIRATConversion(out, 'segmenter-vit', arch, num_classes, None,
                           (n_enc, n_dec), ignored, [])


def convert_pir_at(checkpoint: Mapping[str, Any]) -> PIRATConversion:
    """Rename a released PIR-AT checkpoint to MMSeg's module names.

    Args:
        checkpoint (Mapping): The loaded file: a state dict, or a dict
            holding it under ``state_dict`` or ``model``. Keys may carry
            ``module.`` (DDP) prefixes.

    Returns:
        PIRATConversion: The MMSeg state dict and what was detected.

    Raises:
        ValueError: If the file is neither of the two published model types
            (the message lists the expected and the found keys), or its keys
            do not match the detected type exactly.
    """
    sd = strip_wrappers(find_tensors(checkpoint))
    keys = list(sd)
    if any(k.startswith('decode_head.psp_modules.') for k in keys) or any(
            k.startswith('backbone.downsample_layers.') for k in keys):
        return _convert_upernet(sd)
    if any(k.startswith('encoder.')
           for k in keys) and any(k.startswith('decoder.') for k in keys):
        return _convert_segmenter(sd)
    raise ValueError(
        'not a released PIR-AT segmentation checkpoint: expected either an '
        'UPerNet + ConvNeXt (keys backbone.downsample_layers.*, '
        'backbone.stages.*, decode_head.psp_modules.*, ...) or a Segmenter '
        '(keys encoder.blocks.*, decoder.blocks.*, ...); found '
        f'{len(keys)} keys: {format_keys(keys)}. For a backbone-only '
        'ConvNeXt checkpoint use tools/convert_robust_convnext.py')
