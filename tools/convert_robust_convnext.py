"""Convert a (robust) ConvNeXt checkpoint to mmpretrain's ConvNeXt layout.

Reads a timm, robust-ImageNet (ConvStem, ``module.``/``base_model.``
prefixes), original (facebookresearch; also the backbone of a released
PIR-AT segmentation checkpoint) or mmpretrain ConvNeXt checkpoint and writes
``{'state_dict': ..., 'meta': ...}`` with mmpretrain key names, so that the
stock initialiser can load it::

    python tools/convert_robust_convnext.py SRC DST [--prefix backbone.]

    # then in the config
    init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')

A ConvStem checkpoint still needs ``type='RobustConvNeXt', stem='conv'``.
``RobustPretrained`` loads SRC directly, without this step.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.runner import CheckpointLoader

import mmseg_robust
from mmseg_robust.converters import convert_robust_convnext

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a timm / robust / original / mmpretrain '
        "ConvNeXt checkpoint to mmpretrain's ConvNeXt key layout")
    parser.add_argument('src', help='source checkpoint (path or URL)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument(
        '--prefix',
        default='backbone.',
        help="prefix of the written keys (default 'backbone.'; pass '' for "
        'bare backbone keys)')
    parser.add_argument(
        '--src-prefix',
        default=None,
        help='select the keys under this prefix of SRC (after removing '
        'module./base_model.), e.g. for a backbone nested in a larger model')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the conversion.

    Args:
        argv (list[str], optional): Command line without the program name;
            ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    is_url = '://' in args.src
    if not is_url and not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint {args.src!r} does not exist')
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    try:
        conv = convert_robust_convnext(
            checkpoint, prefix=args.src_prefix, return_info=True)
    except (ValueError, TypeError) as err:
        sys.exit(f'error: cannot convert {args.src}: {err}')

    state_dict = {
        args.prefix + k: v.detach().cpu().contiguous()
        for k, v in conv.state_dict.items()
    }
    meta = dict(
        source=args.src,
        source_layout=conv.layout,
        stem=conv.stem,
        ignored_keys=conv.ignored,
        converted_by='mmseg_robust tools/convert_robust_convnext.py',
        mmseg_robust_version=mmseg_robust.__version__)
    out_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(out_dir, exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'{args.src} ({conv.layout} layout, {conv.stem} stem): wrote '
          f'{len(state_dict)} tensors to {args.dst} with key prefix '
          f'{args.prefix!r}; ignored {len(conv.ignored)} keys' +
          (f" ({', '.join(conv.ignored)})" if conv.ignored else ''))
    if conv.stem == 'conv':
        print("note: ConvStem checkpoint; use type='RobustConvNeXt', "
              "stem='conv'")


if __name__ == '__main__':
    main()
