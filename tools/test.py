"""Test (and evaluate) a segmentor; ``--eval sea`` evaluates robustness.

Same command line as MMSegmentation's ``tools/test.py``, plus::

    python tools/test.py CONFIG CHECKPOINT --eval sea [--eps 4 8 12 16]
        [--sea-version 2023|2024] [--n-iter 300] [--attacks ...]
        [--class-weights train|image|W1 W2 ...] [--seed 0] [--amp]
        [--resume] [--max-images N] [--no-skip] [--per-class]
        [--table compact|per_radius|wide]

``--eps`` is in units of 1/255. Per-image results, ``summary.json`` and
``robustness_curve.png`` go to ``<work_dir>/sea`` (or ``--out``).
"""
import argparse
import os
import os.path as osp

import mmseg_robust  # noqa: F401  (compat fixes + registration, first)
from mmengine.config import DictAction
from mmengine.runner import Runner

from mmseg_robust.attacks import (SEA_VERSIONS, attack_names_help,
                                  parse_attack, sea_version)
from mmseg_robust.utils import (ToolError, checkpoint_mismatch,
                                config_from_args, eps_from_cli,
                                setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model; --eval sea for SEA '
        'robustness evaluation')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the dir for logs and (with --eval sea) robustness results')
    parser.add_argument(
        '--out',
        type=str,
        help='stock: directory for predictions (offline evaluation); '
        'with --eval sea: directory for the SEA results')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images are saved (with --eval sea: '
        'clean and worst-case adversarial predictions)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, xxx=yyy format')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='Test time augmentation')
    sea = parser.add_argument_group('robustness evaluation (--eval sea)')
    sea.add_argument(
        '--eval',
        choices=['sea'],
        help='sea: clean and adversarial aAcc/mIoU/mAcc with SEA')
    sea.add_argument(
        '--eps',
        type=float,
        nargs='+',
        default=None,
        help='l_inf radii in units of 1/255 (default: 4 8 12 16)')
    sea.add_argument(
        '--sea-version',
        default=None,
        help='SEA version: 2023 (the paper: mask_ce, bal_ce, js, mask_sph; '
        'the default) or 2024 (ECCV\'24: mask_ce_bal, mask_ce, js)')
    sea.add_argument(
        '--n-iter',
        type=int,
        default=None,
        help='iterations per attack (default 300)')
    sea.add_argument(
        '--attacks',
        nargs='+',
        default=None,
        help='attacks instead of an SEA version: ' + attack_names_help())
    sea.add_argument(
        '--class-weights',
        nargs='+',
        default=None,
        help='class weights of mask_ce_bal (SEA-2024): train (inverse '
        'training-label frequencies, the default), test (of the evaluated '
        'images, as the authors did for PASCAL-VOC), image (per image), or '
        'one number per class')
    sea.add_argument('--seed', type=int, default=None, help='random seed')
    sea.add_argument(
        '--amp',
        action='store_true',
        default=None,
        help='mixed precision for the attacks\' model calls')
    sea.add_argument(
        '--resume',
        action='store_true',
        default=None,
        help='continue an interrupted evaluation from its results file')
    sea.add_argument(
        '--max-images',
        type=int,
        default=None,
        help='evaluate only the first N images (quick look)')
    sea.add_argument(
        '--no-skip',
        action='store_true',
        help='attack every image with every attack at every radius, each '
        'radius on its own (standalone per-attack and per-radius numbers; '
        'slower; curves need not be monotone)')
    sea.add_argument(
        '--independent-radii',
        action='store_true',
        help='attack every radius from scratch instead of starting from '
        'the worst case of the smaller radius (curves need not be '
        'monotone; for comparisons)')
    sea.add_argument(
        '--per-class',
        action='store_true',
        help='also print per-class IoU of the worst case')
    sea.add_argument(
        '--table',
        choices=['compact', 'per_radius', 'wide'],
        default=None,
        help='layout of the printed tables (default compact)')
    sea.add_argument(
        '--log-interval',
        type=int,
        default=None,
        help='log progress every N batches (default 1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    """Stock MMSeg behaviour of --show / --show-dir."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise ToolError('VisualizationHook must be in default_hooks for '
                        '--show/--show-dir: add visualization=dict('
                        "type='SegVisualizationHook')")
    hook = default_hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def sea_options(args, work_dir: str) -> dict:
    """SEATestLoop options given on the command line."""
    opts = {}
    if args.eps is not None:
        opts['eps'] = eps_from_cli(args.eps)
    if args.n_iter is not None:
        opts['n_iter'] = args.n_iter
    if args.attacks is not None:
        if args.sea_version is not None:
            raise ToolError('give either --sea-version or --attacks, not '
                            'both')
        try:
            for a in args.attacks:
                parse_attack(a)
        except ValueError as err:
            raise ToolError(str(err)) from None
        if len(set(args.attacks)) != len(args.attacks):
            raise ToolError(f'--attacks {" ".join(args.attacks)}: each '
                            'attack may be given once')
        opts['attacks'] = list(args.attacks)
        opts['version'] = None
    if args.sea_version is not None:
        try:
            opts['version'] = sea_version(args.sea_version).name.split(
                '-')[1]
        except ValueError:
            raise ToolError(
                f'--sea-version {args.sea_version}: use one of '
                f'{", ".join(SEA_VERSIONS)}') from None
        opts['attacks'] = None
    if args.class_weights is not None:
        opts['class_weights'] = _class_weights_option(args.class_weights)
    for name in ('seed', 'amp', 'resume', 'max_images', 'log_interval'):
        value = getattr(args, name)
        if value is not None:
            opts[name] = value
    if args.no_skip:
        opts['skip_broken'] = False
        opts['chain_radii'] = False
    if args.independent_radii:
        opts['chain_radii'] = False
    if args.out:
        opts['results_dir'] = args.out
    if args.show_dir:
        opts['show_dir'] = args.show_dir if osp.isabs(
            args.show_dir) else osp.join(work_dir, args.show_dir)
    return opts


def _class_weights_option(values):
    if len(values) == 1 and values[0] in ('train', 'test', 'image'):
        return values[0]
    try:
        weights = [float(v) for v in values]
    except ValueError:
        raise ToolError(
            f'--class-weights {" ".join(values)}: give train, test, image, '
            'or one number per class') from None
    if any(not w >= 0 for w in weights):
        raise ToolError('--class-weights: weights must be numbers >= 0')
    return weights


def configure_sea(cfg, args) -> None:
    """Switch the config's test loop and evaluator to SEA."""
    test_cfg = cfg.get('test_cfg') or {}
    if test_cfg.get('type') == 'SEATestLoop':
        base = dict(test_cfg)  # the config's own SEA settings, then the CLI
    else:
        base = dict(type='SEATestLoop')
    base.update(sea_options(args, cfg.work_dir))
    cfg.test_cfg = base
    evaluator = cfg.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        evaluator = evaluator[0] if evaluator else {}
    if evaluator.get('type') != 'SEAMetric':
        metric = dict(type='SEAMetric')
        for key in ('ignore_index', 'iou_metrics', 'nan_to_num', 'beta'):
            if key in evaluator:
                metric[key] = evaluator[key]
        evaluator = metric
    if args.per_class:
        evaluator['per_class'] = True
    if args.table:
        evaluator['table'] = args.table
    cfg.test_evaluator = evaluator


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    if not osp.isfile(args.checkpoint):
        raise ToolError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg.load_from = args.checkpoint
    if cfg.get('test_dataloader') is None:
        raise ToolError(
            f'{args.config} has no test_dataloader: set one (e.g. '
            'test_dataloader = val_dataloader in the config) to say which '
            'images to evaluate')
    setup_cpu_distributed(cfg, args.launcher)

    use_sea = args.eval == 'sea' or \
        (cfg.get('test_cfg') or {}).get('type') == 'SEATestLoop'
    if use_sea:
        if args.tta:
            raise ToolError('--tta is not supported with --eval sea')
        configure_sea(cfg, args)
    else:
        if args.show or args.show_dir:
            cfg = trigger_visualization_hook(cfg, args)
        if args.tta:
            cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
            cfg.tta_model.module = cfg.model
            cfg.model = cfg.tta_model
        if args.out is not None:
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True

    runner = Runner.from_cfg(cfg)
    problem = checkpoint_mismatch(runner.model, args.checkpoint)
    if problem:
        raise ToolError(problem)
    return runner.test()


if __name__ == '__main__':
    main()
