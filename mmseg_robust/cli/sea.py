"""The ``--eval sea`` options of ``tools/test.py``: the argument group,
the SEATestLoop options they give, and what the tool checks in the config
before it builds the Runner (one ``error:`` line each, docs/errors.md)."""
import argparse
import os.path as osp
from typing import Optional

from mmseg_robust.attacks import (attack_names_help, parse_attack, sea_version,
                                  sea_version_names)
from mmseg_robust.evaluation.loops.sea_test_loop import (TTA_PROBLEM,
                                                         dataset_problem)
from .arguments import eps_from_cli
from .errors import ToolError
from .launch import check_launcher_env, check_output_dir

__all__ = [
    'SEA_OPTIONS', 'add_sea_arguments', 'sea_options', 'configure_sea',
    'check_test_config', 'check_output_dirs'
]

#: Options of the ``--eval sea`` group (refused without it).
SEA_OPTIONS = ('eps', 'allow_tiny_eps', 'sea_version', 'n_iter', 'attacks',
               'class_weights', 'seed', 'amp', 'result_precision',
               'channels_last', 'compile', 'resume', 'max_images', 'no_skip',
               'independent_radii', 'per_class', 'table', 'log_interval',
               'checks', 'surrogate', 'norm', 'eot')


def add_sea_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``robustness evaluation (--eval sea)`` argument group."""
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
        help='l_inf radii in units of 1/255 (default: 4 8 12 16); radii '
        'in (0, 1) need --allow-tiny-eps. With --norm l2: l2 radii of the '
        '[0, 1] image, e.g. --eps 0.25 0.5 1 (required)')
    sea.add_argument(
        '--allow-tiny-eps',
        action='store_true',
        help='accept radii in (0, 1): --eps 0.5 means 0.5/255 (without it '
        'they are refused as fractions typed by mistake, e.g. 0.03 for 8)')
    sea.add_argument(
        '--sea-version',
        default=None,
        help='SEA version: recommended (SEA-R1, the default: the strongest '
        'at SEA-2023\'s cost), thorough (SEA-T2: SEA-R1\'s attacks at '
        '2.5x the iterations, for final numbers), T1 (the first '
        'thorough preset, ten runs), 2023 (the paper: '
        'mask_ce, bal_ce, js, mask_sph) or 2024 (ECCV\'24: mask_ce_bal, '
        'mask_ce, js); the published versions keep their protocols '
        'exactly (docs/attacks.md)')
    sea.add_argument(
        '--n-iter',
        type=int,
        default=None,
        help='iterations per attack (default 300; SEA-T2 runs 2.5x '
        'this: 750)')
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
        nargs='?',
        const='auto',
        default=None,
        choices=['fp16', 'bf16', 'auto'],
        help='mixed precision for the attacks\' model calls: fp16, bf16, '
        'or bare --amp for bf16 where the device supports it (else fp16). '
        'Reported predictions stay float32 (--result-precision)')
    sea.add_argument(
        '--result-precision',
        choices=['fp32', 'amp'],
        default=None,
        help='precision of the clean and adversarial predictions that enter '
        'the metrics: fp32 (default: each attack\'s output is evaluated '
        'again in float32) or amp (as the attack saw them)')
    sea.add_argument(
        '--channels-last',
        action='store_true',
        default=None,
        help='run the segmentor with channels-last weights and inputs')
    sea.add_argument(
        '--compile',
        action='store_true',
        default=None,
        help='torch.compile the segmentor\'s backbone, neck and heads')
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
    sea.add_argument(
        '--norm',
        choices=['linf', 'l2'],
        default=None,
        help='threat model: linf (the default, the paper\'s) or l2 (every '
        'APGD and PGD attack in its l2 version; --eps then gives l2 radii; '
        'docs/attacks.md, "The l2 threat model")')
    sea.add_argument(
        '--eot',
        type=int,
        default=None,
        metavar='N',
        help='expectation over transformation for randomised models: the '
        'white-box attacks average each gradient over N passes (N times '
        'the cost; default 1)')
    sea.add_argument(
        '--checks',
        choices=['none', 'fast', 'full'],
        default=None,
        help='the trust report beside the numbers (docs/evaluation.md, "Can '
        'I trust this number?"): fast (the default, a few %% of the '
        'attacks\' cost), full (longer, radius 1.0 too, the black-box '
        'attack on every image) or none')
    sea.add_argument(
        '--surrogate',
        nargs=2,
        metavar=('CONFIG', 'CKPT'),
        default=None,
        help='another model (config and checkpoint) for the report\'s '
        'transfer check: adversarial images made on it must not beat the '
        'white-box attack on this model')


def sea_options(args, work_dir: str, config: Optional[dict] = None) -> dict:
    """SEATestLoop options given on the command line (``config``: the
    config's own SEATestLoop settings; ``--eps`` is read in their norm
    unless ``--norm`` says otherwise)."""
    opts = {}
    config = config or {}
    config_norm = config.get('norm', 'linf')
    norm = args.norm or config_norm
    if args.norm is not None:
        if args.norm != config_norm and 'eps' in config and \
                args.eps is None:
            raise ToolError(
                f'--norm {args.norm}: the config\'s SEATestLoop has '
                f'norm={config_norm!r} and radii in that norm; give --eps '
                'in the new one too')
        opts['norm'] = args.norm
    if norm == 'l2' and (args.eps is not None or args.norm == 'l2'):
        opts['eps'] = _l2_radii(args)
    elif args.eps is not None:
        opts['eps'] = eps_from_cli(args.eps, allow_tiny=args.allow_tiny_eps)
    if args.eot is not None:
        if args.eot < 1:
            raise ToolError(f'--eot {args.eot}: must be >= 1 (gradient '
                            'samples per attack step; 1 for deterministic '
                            'models)')
        opts['eot'] = args.eot
    for name, minimum in (('n_iter', 1), ('max_images', 1), ('log_interval',
                                                             1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise ToolError(f'--{name.replace("_", "-")} {value}: must be '
                            f'>= {minimum}')
    if args.n_iter is not None:
        opts['n_iter'] = args.n_iter
    if args.attacks is not None:
        if args.sea_version is not None:
            raise ToolError('give either --sea-version or --attacks, not '
                            'both')
        _check_attacks(args.attacks)
        opts['attacks'] = list(args.attacks)
        opts['version'] = None
    if args.sea_version is not None:
        try:
            opts['version'] = sea_version(args.sea_version).name.split('-')[1]
        except ValueError:
            raise ToolError(f'--sea-version {args.sea_version}: use one of '
                            f'{sea_version_names()}') from None
        opts['attacks'] = None
    if args.class_weights is not None:
        opts['class_weights'] = _class_weights_option(args.class_weights)
    for name in ('seed', 'amp', 'result_precision', 'channels_last', 'compile',
                 'resume', 'max_images', 'log_interval'):
        value = getattr(args, name)
        if value is not None:
            opts[name] = value
    if args.no_skip:
        opts['skip_broken'] = False
        opts['chain_radii'] = False
    if args.independent_radii:
        opts['chain_radii'] = False
    if args.checks is not None:
        opts['checks'] = args.checks
    if args.surrogate is not None:
        if args.checks == 'none':
            raise ToolError('--surrogate is for the transfer check of the '
                            'trust report, which --checks none turns off: '
                            'leave out one of them')
        opts['surrogate'] = dict(
            config=args.surrogate[0], checkpoint=args.surrogate[1])
    if args.out:
        opts['results_dir'] = args.out
    if args.show_dir:
        opts['show_dir'] = args.show_dir if osp.isabs(
            args.show_dir) else osp.join(work_dir, args.show_dir)
    return opts


def _l2_radii(args) -> list:
    """``--eps`` under ``--norm l2``: l2 radii as typed (required)."""
    if args.eps is None:
        raise ToolError('--norm l2 needs --eps with l2 radii of the [0, 1] '
                        'image, e.g. --eps 0.25 0.5 1 (the l_inf defaults '
                        '4 8 12 16 /255 do not carry over; docs/attacks.md, '
                        '"The l2 threat model")')
    if args.allow_tiny_eps:
        raise ToolError('--allow-tiny-eps is for l_inf radii in units of '
                        '1/255; l2 radii are taken as typed: leave it out')
    bad = [v for v in args.eps if not v >= 0 or v == float('inf')]
    if bad:
        raise ToolError(f'--eps {bad[0]:g}: an l2 radius must be a finite '
                        'number >= 0, e.g. --norm l2 --eps 0.5')
    return list(args.eps)


def _check_attacks(names) -> None:
    """Known attack names, each attack once (``js`` and ``red_eps:js`` are
    the same attack)."""
    seen = {}
    for name in names:
        try:
            spec = parse_attack(name)
        except ValueError as err:
            raise ToolError(f'--attacks: {err}') from None
        key = (spec.method, spec.loss, spec.track, spec.restart)
        if key in seen:
            same = f'{name!r} is given twice' if seen[key] == name else \
                f'{seen[key]!r} and {name!r} are the same attack'
            raise ToolError(f'--attacks {" ".join(names)}: {same}; give '
                            'each attack once')
        seen[key] = name


def _check_attack_options(test_cfg: dict, args) -> None:
    """Options that do not fit the attacks the run will use: ``--n-iter``
    below 3 with red-eps APGD, ``--class-weights`` without mask_ce_bal."""
    try:
        attacks = test_cfg.get('attacks')
        n_iter = args.n_iter
        if not attacks:
            version = sea_version(test_cfg.get('version'))
            attacks = version.attacks
            if n_iter is not None:
                n_iter = version.iterations(n_iter)  # SEA-T2: 2.5 x
        specs = [parse_attack(a) for a in attacks]
    except ValueError:
        return  # the test loop names the bad setting
    red_eps = [a.name for a in specs if a.method == 'red_eps']
    if red_eps and n_iter is not None and n_iter < 3:
        raise ToolError(
            f'--n-iter {args.n_iter}: {red_eps[0]} (red-eps APGD, as in '
            'SEA) splits its iterations over three radii and needs '
            '--n-iter >= 3')
    if args.class_weights is not None and not any(a.loss == 'mask_ce_bal'
                                                  for a in specs):
        raise ToolError(
            '--class-weights: only the mask_ce_bal attack uses class '
            'weights, and this run does not (use --sea-version 2024 or '
            '--attacks mask_ce_bal ...)')


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
    base.update(sea_options(args, cfg.work_dir, base))
    _check_attack_options(base, args)
    cfg.test_cfg = base
    evaluator = cfg.get('test_evaluator') or {}
    if isinstance(evaluator, (list, tuple)):
        evaluator = evaluator[0] if evaluator else {}
    if evaluator.get('type') != 'SEAMetric':
        metric = dict(type='SEAMetric')
        # SEAMetric's ignore_index is the loop's too (it checks they agree)
        for key in ('iou_metrics', 'nan_to_num', 'beta', 'ignore_index'):
            if key in evaluator:
                metric[key] = evaluator[key]
        evaluator = metric
    if args.per_class:
        evaluator['per_class'] = True
    if args.table:
        evaluator['table'] = args.table
    cfg.test_evaluator = evaluator


def check_test_config(cfg, args, use_sea: bool) -> None:
    """What can be checked in the config before the Runner is built.

    Raises:
        ToolError: The test set, the launcher environment or the TTA
            settings do not work.
    """
    if cfg.get('test_dataloader') is None:
        raise ToolError(
            f'{args.config} has no test_dataloader: set one (e.g. '
            'test_dataloader = val_dataloader in the config) to say which '
            'images to evaluate')
    check_launcher_env(args.launcher)
    if not use_sea:
        given = [
            f'--{name.replace("_", "-")}' for name in SEA_OPTIONS
            if getattr(args, name) not in (None, False)
        ]
        if given:
            raise ToolError(f'{", ".join(given)}: only with --eval sea (or '
                            'a config with test_cfg=dict(type=\'SEATestLoop\''
                            ', ...))')
        if args.tta and not (cfg.get('tta_pipeline') and cfg.get('tta_model')):
            raise ToolError(f'--tta: {args.config} has no tta_pipeline and '
                            'tta_model (MMSeg\'s dataset and model bases '
                            'define them)')
        return
    if args.tta:
        raise ToolError('--tta (test-time augmentation) is not supported '
                        'with --eval sea: SEA attacks the plain test-time '
                        'prediction; leave out --tta')
    model_type = (cfg.get('model') or {}).get('type')
    if model_type == 'SegTTAModel':
        raise ToolError('the model is a SegTTAModel (test-time '
                        'augmentation), which SEA does not support: use the '
                        'plain segmentor (tta_model.module) as model')
    dataset = cfg.test_dataloader.get('dataset') or {}
    problem = dataset_problem(dataset)
    if problem:
        raise ToolError(problem)
    if any(
            isinstance(t, dict) and t.get('type') == 'TestTimeAug'
            for t in dataset.get('pipeline') or []):
        raise ToolError(TTA_PROBLEM)


def check_output_dirs(cfg, args, use_sea: bool) -> None:
    """The work dir and the output folders are (or can be made) writable
    directories. Creates them: called last, just before the Runner (which
    would create the work dir anyway)."""
    check_output_dir(cfg.work_dir,
                     '--work-dir' if args.work_dir else 'work_dir')
    if args.out:
        check_output_dir(args.out, '--out')
    if args.show_dir and use_sea:
        check_output_dir(
            args.show_dir if osp.isabs(args.show_dir) else osp.join(
                cfg.work_dir, args.show_dir), '--show-dir')
