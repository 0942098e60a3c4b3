"""Train a segmentor with MMSeg, mmseg_robust's modules registered.

Same command line as MMSegmentation's ``tools/train.py``, plus one place
each for what a recipe usually needs changed off its GPU cluster::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]
        [--amp | --no-amp] [--crop-size H W] [--test-scale LONG SHORT]
        [--data-root DIR] [--trust-checkpoint PATH] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}] [--debug]

Bad input ends with one ``error: ...`` line and exit status 1, before any
work where it can be checked up front (docs/errors.md lists them);
``--debug`` shows the traceback of such errors too.
"""
import argparse
import logging
import os.path as osp
import pickle
import zipfile
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_robust
from mmseg_robust.cli import (ToolError, add_runner_arguments,
                              check_launcher_env, check_output_dir,
                              checkpoint_file_problem, config_from_args,
                              debug_requested, parse_runner_args, set_amp,
                              set_crop_size, set_data_root, set_test_scale,
                              setup_cpu_distributed, user_errors)
from mmseg_robust.compat.checkpoint import (UnsafeCheckpointError,
                                            trust_checkpoints)
from mmseg_robust.errors import ConfigError

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()


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
        '--data-root',
        help='dataset folder for every train/val/test dataset of the config')
    add_runner_arguments(parser,
                         'load_from, --resume or an init_cfg of the config')
    return parse_runner_args(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the tool."""
    args = parse_args(argv)
    with user_errors(debug_requested(args.debug)):
        run(args)


def _checkpoint_to_load(cfg) -> Optional[str]:
    """The checkpoint the Runner will load or resume from, if any."""
    from mmengine.runner.checkpoint import find_latest_checkpoint
    if cfg.get('resume') and cfg.get('load_from') is None:
        return find_latest_checkpoint(cfg.work_dir) \
            if osp.isdir(cfg.work_dir) else None
    return cfg.get('load_from')


def _guard_dataloaders(runner) -> None:
    """Turn a dataset whose files are missing into a ConfigError (the
    Runner builds the dataloaders inside ``train()``; a dataset may create
    its own data_root, so it is not checked up front)."""
    build_dataloader = runner.build_dataloader

    def guarded(dataloader, *args, **kwargs):
        try:
            return build_dataloader(dataloader, *args, **kwargs)
        except FileNotFoundError as err:
            dataset = dataloader.get('dataset', {}) \
                if isinstance(dataloader, dict) else {}
            kind = dataset.get('type') if isinstance(dataset, dict) else None
            raise ConfigError(
                f'a dataset{f" ({kind})" if kind else ""} could not be '
                f'built: {err}. Check its data_root, data_prefix and '
                'ann_file (--data-root sets every data_root)') from err

    runner.build_dataloader = guarded


def _guard_checkpoint_loading(runner, path: str, resume: bool) -> None:
    """Turn a checkpoint that cannot be loaded into a ConfigError naming
    it (``Runner.train`` loads it only after building everything else)."""
    load_or_resume = runner.load_or_resume

    def guarded():
        try:
            return load_or_resume()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, RuntimeError, OSError,
                zipfile.BadZipFile, KeyError, ValueError) as err:
            if resume and isinstance(err, KeyError) and \
                    err.args == ('meta', ):
                raise ConfigError(
                    f'cannot resume from {path}: it holds weights but no '
                    'training state (meta, optimizer, iteration); to start '
                    'a training from these weights use --cfg-options '
                    f'load_from={path} instead of --resume') from err
            said = (str(err).strip().splitlines() or [''])[0][:300]
            how = 'resume from' if resume else 'load'
            raise ConfigError(
                f'could not {how} checkpoint {path} ({type(err).__name__}: '
                f'{said}): is it a checkpoint of this config, and '
                'complete? (--debug shows the traceback)') from err

    runner.load_or_resume = guarded


def run(args: argparse.Namespace) -> None:
    """Everything after parsing; the package's user errors (ConfigError,
    a refused checkpoint) become one ``error:`` line in :func:`main`."""
    cfg = config_from_args(args)
    check_launcher_env(args.launcher)

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
        print_log(
            f'--crop-size {args.crop_size}: set {", ".join(keys)}',
            logger='current')
    if args.test_scale:
        keys = set_test_scale(cfg, args.test_scale)
        print_log(
            f'--test-scale {args.test_scale}: set {", ".join(keys)}',
            logger='current')
    if args.data_root:
        keys = set_data_root(cfg, args.data_root)
        print_log(
            f'--data-root {args.data_root}: set {", ".join(keys)}',
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
    # an empty, truncated or foreign file stops here, before the Runner
    # writes anything to the work dir (its checkpoints stay as they are)
    ckpt = _checkpoint_to_load(cfg)
    if ckpt and '://' not in ckpt:
        problem = checkpoint_file_problem(ckpt)
        if problem:
            what = 'load_from' if not cfg.get('resume') else (
                '--resume (the latest checkpoint of the work dir)'
                if args.resume == 'auto' else '--resume')
            raise ToolError(f'{what}: {problem}')
    # last check: creates the work dir (as the Runner would)
    check_output_dir(cfg.work_dir,
                     '--work-dir' if args.work_dir else 'work_dir')
    setup_cpu_distributed(cfg, args.launcher)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    _guard_dataloaders(runner)
    if ckpt:
        _guard_checkpoint_loading(runner, ckpt, bool(cfg.get('resume')))
    runner.train()


if __name__ == '__main__':
    main()
