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

__all__ = ['apply_train_options', 'train', 'LOAD_ERRORS']


def apply_train_options(cfg: Config,
                        args: argparse.Namespace) -> Optional[str]:
    """Apply the recipe options to ``cfg`` and check the checkpoint it will
    load or resume from (an empty, truncated or foreign file stops here,
    before the Runner writes anything to the work dir).

    Returns:
        str or None: That checkpoint, if any (for :func:`train`).

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


def _frame_of(err: BaseException, name: str):
    """The innermost frame of function ``name`` that ``err`` passed through
    (None if it did not)."""
    found, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == name:
            found = tb.tb_frame
        tb = tb.tb_next
    return found


def _dataset_problem(err: FileNotFoundError) -> Optional[ConfigError]:
    """A dataset whose files are missing, as a ConfigError (the Runner
    builds the dataloaders inside ``train()``; a dataset may create its own
    data_root, so it is not checked up front)."""
    frame = _frame_of(err, 'build_dataloader')
    if frame is None:
        return None
    dataloader = frame.f_locals.get('dataloader')
    dataset = dataloader.get('dataset', {}) \
        if isinstance(dataloader, dict) else {}
    kind = dataset.get('type') if isinstance(dataset, dict) else None
    return ConfigError(f'a dataset{f" ({kind})" if kind else ""} could not '
                       f'be built: {err}. Check its data_root, data_prefix '
                       'and ann_file (--data-root sets every data_root)')


#: What loading a checkpoint that is not one of this config raises.
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, OSError,
               zipfile.BadZipFile, KeyError, ValueError)


def _checkpoint_problem(err: Exception, path: str,
                        resume: bool) -> Optional[ConfigError]:
    """A checkpoint that cannot be loaded or resumed from, as a
    ConfigError naming it (``Runner.train`` loads it only after building
    everything else)."""
    if _frame_of(err, 'load_or_resume') is None:
        return None
    if resume and isinstance(err, KeyError) and err.args == ('meta', ):
        return ConfigError(
            f'cannot resume from {path}: it holds weights but no '
            'training state (meta, optimizer, iteration); to start '
            'a training from these weights use --cfg-options '
            f'load_from={path} instead of --resume')
    said = (str(err).strip().splitlines() or [''])[0][:300]
    how = 'resume from' if resume else 'load'
    return ConfigError(
        f'could not {how} checkpoint {path} ({type(err).__name__}: '
        f'{said}): is it a checkpoint of this config, and '
        'complete? (--debug shows the traceback)')


def train(runner, checkpoint: Optional[str], resume: bool) -> None:
    """``runner.train()``, its late user errors made one ``error:`` line
    each.

    ``Runner.train`` builds the dataloaders and loads the checkpoint only
    after everything else, so their failures cannot be checked up front: a
    dataset whose files are missing (a ``FileNotFoundError`` raised inside
    ``build_dataloader``), or a checkpoint that cannot be loaded or resumed
    from (raised inside ``load_or_resume``), becomes a ConfigError naming
    it. The Runner itself is not changed; every other exception passes
    through as it is.

    Args:
        runner (Runner): The tool's Runner.
        checkpoint (str, optional): What it loads or resumes from
            (:func:`apply_train_options`).
        resume (bool): Whether it resumes.
    """
    try:
        runner.train()
    except UnsafeCheckpointError:
        raise
    except LOAD_ERRORS as err:
        problem = None
        if isinstance(err, FileNotFoundError):
            problem = _dataset_problem(err)
        if problem is None and checkpoint:
            problem = _checkpoint_problem(err, checkpoint, resume)
        if problem is None:
            raise
        raise problem from err
