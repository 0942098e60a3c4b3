"""Convert a released PIR-AT segmentation checkpoint to an MMSeg checkpoint.

The paper's authors publish their robust models (UPerNet + ConvNeXt-T/S with
the conv stem for PASCAL-VOC and ADE20K, Segmenter ViT-S for ADE20K) as
plain state dicts of their own model classes. This tool renames them for
the configs in ``configs/pir_at/`` and writes
``{'state_dict': ..., 'meta': ...}``::

    python tools/convert_pir_at.py SRC DST [--config CONFIG]

    # then, e.g.
    python tools/test.py configs/pir_at/CONFIG.py DST --eval sea

It prints what it found (model, backbone, stem, number of classes) and the
matching configs. With ``--config`` it also builds that config's model and
checks that the converted file loads with no missing, unexpected or
mis-shaped keys. See :mod:`mmseg_robust.converters.pir_at` for the key mapping.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.runner import CheckpointLoader

import mmseg_robust
from mmseg_robust.converters import PIRATConversion, convert_pir_at

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()

# which configs in configs/pir_at/ fit a converted model
_DATASETS = {21: 'voc2012', 151: 'ade20k'}
_PREFIXES = {
    ('upernet-convnext', 'convnext-t'): 'upernet_convnext-t-cvst',
    ('upernet-convnext', 'convnext-s'): 'upernet_convnext-s-cvst',
    ('segmenter-vit', 'vit-s'): 'segmenter_vit-s',
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert the paper's released PIR-AT checkpoints "
        '(UPerNet + ConvNeXt, Segmenter ViT-S) to MMSeg checkpoints for '
        'configs/pir_at/')
    parser.add_argument('src', help='the downloaded checkpoint (path or URL)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument(
        '--config',
        default=None,
        help='also build this config\'s model and check that the output '
        'loads into it with no missing or unexpected keys')
    return parser.parse_args(argv)


def matching_configs(conv: PIRATConversion) -> List[str]:
    """Names of the configs in ``configs/pir_at/`` for this model."""
    prefix = _PREFIXES.get((conv.model, conv.arch))
    dataset = _DATASETS.get(conv.num_classes)
    if prefix is None or dataset is None or (conv.model == 'upernet-convnext'
                                             and conv.stem != 'conv'):
        return []
    return [
        f'configs/pir_at/{prefix}_pir-at_{dataset}_{protocol}.py'
        for protocol in ('paper-protocol', 'mmseg-protocol')
    ]


def check_against_config(state_dict: dict, config: str) -> Optional[str]:
    """Build ``config``'s model and describe how ``state_dict`` does not fit
    it (``None`` when it loads strictly)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_robust.cli import load_config

    cfg = load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f'{k}: converted {tuple(state_dict[k].shape)} vs model '
                    f'{tuple(own[k].shape)}'
                    for k in set(own) & set(state_dict)
                    if state_dict[k].shape != own[k].shape)
    if not (missing or unexpected or shapes):
        return None
    parts = [f'the converted weights do not fit the model of {config}']
    for name, keys in (('missing keys', missing),
                       ('unexpected keys', unexpected), ('shape mismatches',
                                                         shapes)):
        if keys:
            shown = ', '.join(keys[:20])
            more = f' ... (+{len(keys) - 20} more)' if len(keys) > 20 else ''
            parts.append(f'{name} ({len(keys)}): {shown}{more}')
    return '\n  '.join(parts)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the conversion.

    Args:
        argv (list[str], optional): Command line without the program name;
            ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    if '://' not in args.src and not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint {args.src!r} does not exist')
    if args.config is not None and not osp.isfile(args.config):
        sys.exit(f'error: config file {args.config!r} does not exist')
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    try:
        conv = convert_pir_at(checkpoint)
    except (ValueError, TypeError) as err:
        sys.exit(f'error: cannot convert {args.src}: {err}')
    state_dict = {
        k: v.detach().cpu().contiguous()
        for k, v in conv.state_dict.items()
    }
    if args.config is not None:
        problem = check_against_config(state_dict, args.config)
        if problem:
            sys.exit(f'error: {problem}\n(nothing written; is this the '
                     'config of this model? see the detected model above '
                     f'or run without --config)\ndetected: {conv.model}, '
                     f'{conv.arch}, {conv.num_classes} classes')

    meta = dict(
        source=args.src,
        model=conv.model,
        arch=conv.arch,
        stem=conv.stem,
        depths=list(conv.depths),
        num_classes=conv.num_classes,
        ignored_keys=conv.ignored,
        filled_keys=conv.filled,
        converted_by='mmseg_robust tools/convert_pir_at.py',
        mmseg_robust_version=mmseg_robust.__version__)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)

    stem = f', {conv.stem} stem' if conv.stem else ''
    print(f'{args.src}: {conv.model} ({conv.arch}{stem}), '
          f'{conv.num_classes} classes -> wrote {len(state_dict)} tensors '
          f'to {args.dst}')
    if conv.ignored:
        print(f'ignored (not used for segmentation): '
              f'{", ".join(conv.ignored)}')
    if conv.filled:
        print(f'filled with 0 (BatchNorm counters absent from the source, '
              f'unused in evaluation): {len(conv.filled)} keys')
    if args.config is not None:
        print(f'checked: loads into the model of {args.config} with no '
              'missing or unexpected keys')
    configs = matching_configs(conv)
    if configs:
        print('configs for this model:\n  ' + '\n  '.join(configs))
    else:
        print('note: no config in configs/pir_at/ describes this model; '
              'adapt one (backbone arch/stem, num_classes)')


if __name__ == '__main__':
    main()
