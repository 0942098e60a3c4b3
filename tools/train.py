"""Train a segmentor with MMSeg, mmseg_robust's modules registered.

Same command line as MMSegmentation's ``tools/train.py``, plus one place
each for what a recipe usually needs changed off its GPU cluster::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]
        [--amp | --no-amp] [--crop-size H W] [--test-scale LONG SHORT]
        [--data-root DIR] [--trust-checkpoint PATH] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import logging
import os
import os.path as osp

import mmseg_robust  # noqa: F401  (compat fixes + registration, first)
import torch
from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmseg.registry import RUNNERS
from mmseg_robust.compat.checkpoint import trust_checkpoints
from mmseg_robust.utils import (ToolError, config_from_args, set_amp,
                                set_crop_size, set_data_root, set_test_scale,
                                setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a segmentor (clean or adversarial) with MMSeg')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume training: from CKPT if given, else from the latest '
        'checkpoint in the work dir')
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument(
        '--amp',
        action='store_true',
        default=None,
        help='enable automatic-mixed-precision training')
    amp.add_argument(
        '--no-amp',
        dest='amp',
        action='store_false',
        help='disable it (AmpOptimWrapper -> OptimWrapper, its AMP-only '
        'arguments dropped); needed on a CPU for configs that use AMP')
    parser.add_argument(
        '--crop-size',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help='training crop: every RandomCrop/Pad, the data preprocessor '
        'and the slide-inference window')
    parser.add_argument(
        '--test-scale',
        nargs=2,
        type=int,
        metavar=('LONG', 'SHORT'),
        help='Resize scale of the validation/test pipelines (MMSeg: 2048 '
        '512)')
    parser.add_argument(
        '--data-root',
        help='dataset folder for every train/val/test dataset of the config')
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help='allow full unpickling of this checkpoint (load_from, --resume '
        'or an init_cfg) if safe loading refuses it; it can run code stored '
        'in the file, so only for files you trust (repeatable; * = all)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, xxx=yyy format; lists as '
        'key="[a,b]" or key=a,b; no white space')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    setup_cpu_distributed(cfg, args.launcher)

    for path in args.trust_checkpoint:
        trust_checkpoints(path)

    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if args.amp and wrapper == 'AmpOptimWrapper':
        print_log(
            'AMP training is already enabled in your config.',
            logger='current',
            level=logging.WARNING)
    elif args.amp and wrapper != 'OptimWrapper':
        raise ToolError('--amp only works with optim_wrapper type '
                        f'OptimWrapper, the config has {wrapper}')
    # --no-amp, or a bare `--cfg-options optim_wrapper.type=OptimWrapper`
    # that left AmpOptimWrapper's loss_scale behind
    changes = set_amp(cfg, bool(args.amp)) \
        if args.amp is not None or wrapper == 'OptimWrapper' else []
    if changes:
        print_log(f'AMP: {", ".join(changes)}', logger='current')
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        raise ToolError('the config trains with mixed precision '
                        '(AmpOptimWrapper), which needs a GPU; on a CPU add '
                        '--no-amp')
    if args.crop_size:
        keys = set_crop_size(cfg, args.crop_size)
        print_log(f'--crop-size {args.crop_size}: set {", ".join(keys)}',
                  logger='current')
    if args.test_scale:
        keys = set_test_scale(cfg, args.test_scale)
        print_log(f'--test-scale {args.test_scale}: set {", ".join(keys)}',
                  logger='current')
    if args.data_root:
        keys = set_data_root(cfg, args.data_root)
        print_log(f'--data-root {args.data_root}: set {", ".join(keys)}',
                  logger='current')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise ToolError(f'--resume checkpoint {args.resume!r} '
                            'does not exist')
        cfg.resume = True
        cfg.load_from = args.resume

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
