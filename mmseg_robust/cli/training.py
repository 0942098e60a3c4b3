"""What ``tools/train.py`` adds to MMSeg's: the recipe options (``--amp`` /
``--no-amp``, ``--crop-size``, ``--test-scale``, ``--data-root``,
``--resume``) applied to the config, the checkpoint checked before the
Runner writes anything, and the Runner's late failures (missing data, a
checkpoint that cannot be loaded) turned into one ``error:`` line each
(docs/errors.md)."""
import argparse
import logging
import os.path as osp
import pickle
import zipfile
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from mmseg_robust.compat.checkpoint import UnsafeCheckpointError
from mmseg_robust.errors import ConfigError
from .checkpoints import checkpoint_file_problem
from .config import set_amp, set_crop_size, set_data_root, set_test_scale
from .errors import ToolError

__all__ = ['apply_train_options', 'guard_runner']


def apply_train_options(cfg: Config,
                        args: argparse.Namespace) -> Optional[str]:
    """Apply the recipe options to ``cfg`` and check the checkpoint it will
    load or resume from (an empty, truncated or foreign file stops here,
    before the Runner writes anything to the work dir).

    Returns:
        str or None: That checkpoint, if any (for :func:`guard_runner`).

    Raises:
        ToolError: An option does not fit the config or the machine, or the
            checkpoint cannot be read.
    """
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
    return ckpt


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


def guard_runner(runner, checkpoint: Optional[str], resume: bool) -> None:
    """Make the Runner's late user errors one ``error:`` line each.

    ``Runner.train`` builds the dataloaders and loads the checkpoint only
    after everything else, so their failures cannot be checked up front:
    this wraps those two methods *of this Runner instance* (nothing else
    changes) so that a dataset whose files are missing, or a checkpoint
    that cannot be loaded or resumed from, raises a ConfigError naming it.

    Args:
        runner (Runner): The tool's own Runner, before ``train()``.
        checkpoint (str, optional): What it loads or resumes from
            (:func:`apply_train_options`).
        resume (bool): Whether it resumes.
    """
    _guard_dataloaders(runner)
    if checkpoint:
        _guard_checkpoint_loading(runner, checkpoint, resume)
