"""Helpers shared by the command-line tools.

Bad input ends a tool with one ``error: ...`` line and exit status 1
(:class:`ToolError`): argument values, paths and the launcher environment
are checked before the Runner is built; the user errors the package raises
later (:class:`~mmseg_robust.errors.ConfigError`, a refused checkpoint) are
turned into that line by :func:`user_errors`. The catalogue of messages is
``docs/errors.md``.
"""
import argparse
import contextlib
import os
import os.path as osp
import pickle
import tempfile
import warnings
import zipfile
from typing import Iterator, List, Optional, Sequence, Union

import torch
from mmengine.config import Config, DictAction

from mmseg_robust.compat.checkpoint import UnsafeCheckpointError
from mmseg_robust.errors import ConfigError

__all__ = [
    'load_config', 'set_work_dir', 'checkpoint_mismatch', 'eps_from_cli',
    'ToolError', 'setup_cpu_distributed', 'set_amp', 'set_crop_size',
    'set_test_scale', 'set_data_root', 'AMP_ONLY_KEYS', 'ConfigError',
    'USER_ERRORS', 'DEBUG_ENV', 'debug_requested', 'user_errors',
    'checkpoint_file_problem', 'read_checkpoint', 'check_output_dir',
    'check_launcher_env', 'add_runner_arguments', 'parse_runner_args'
]

#: ``AmpOptimWrapper`` arguments that ``OptimWrapper`` does not take.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')

#: Exceptions that are user errors wherever they are raised: printed as one
#: ``error:`` line by :func:`user_errors`, other exceptions keep their
#: traceback.
USER_ERRORS = (ConfigError, UnsafeCheckpointError)

#: Environment variable that shows the traceback of user errors too.
DEBUG_ENV = 'MMSEG_ROBUST_DEBUG'


class ToolError(SystemExit):
    """A user error in a command-line tool: exits with the message."""

    def __init__(self, message: str):
        super().__init__(f'error: {message}')


def debug_requested(flag: bool = False) -> bool:
    """Whether user errors should keep their traceback: ``--debug`` or
    ``MMSEG_ROBUST_DEBUG`` set to anything but ``''`` / ``0``."""
    return bool(flag) or os.environ.get(DEBUG_ENV, '') not in ('', '0')


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn the package's user errors (:data:`USER_ERRORS`) into a
    :class:`ToolError`: one ``error:`` line, exit status 1, no traceback.

    Args:
        debug (bool): Re-raise them unchanged instead (with traceback).

    Raises:
        ToolError: A user error was raised inside the block.
    """
    try:
        yield
    except USER_ERRORS as err:
        if debug:
            raise
        message = str(err)
        if message.startswith('error: '):
            message = message[len('error: '):]
        raise ToolError(message) from None


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear message for a missing file, and one
    sentence (not a registry traceback) for a model this installation
    cannot build: CCNet/PSANet without compiled mmcv ops, Mask2Former /
    MaskFormer without mmdet, VPD without its optional packages (see
    :mod:`mmseg_robust.models.requirements`)."""
    from mmseg_robust.models.requirements import model_requirement_problems
    if not osp.isfile(path):
        raise ToolError(f'config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except ImportError:
        # ``custom_imports`` of a package that is not installed
        # (Mask2Former's ``mmdet.models``): say which model needs what
        cfg = Config.fromfile(path, import_custom_modules=False)
        problems = model_requirement_problems(
            cfg.get('model'), cfg.get('custom_imports'))
        if problems:
            raise ToolError(problems[0]) from None
        raise
    problems = model_requirement_problems(cfg.get('model'))
    if problems:
        raise ToolError(problems[0])
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str],
                 config_path: str) -> None:
    """Work dir priority: command line > config > ``./work_dirs/<name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def config_from_args(args) -> Config:
    """The config of a train/test command line: loaded, ``--launcher`` and
    ``--cfg-options`` applied, work dir set (MMSeg's tools do the same)."""
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_work_dir(cfg, args.work_dir, args.config)
    return cfg


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What is wrong with a checkpoint file, found without unpickling it
    (``None`` if nothing is): missing, a directory, empty, a truncated zip
    archive, or not a PyTorch checkpoint at all.

    Args:
        path (str): Checkpoint path.

    Returns:
        str or None: The problem, for an ``error:`` line.
    """
    if not osp.exists(path):
        return f'checkpoint {path!r} does not exist'
    if osp.isdir(path):
        return f'checkpoint {path!r} is a directory, not a file'
    size = osp.getsize(path)
    if size == 0:
        return (f'checkpoint {path} is empty (0 bytes): an interrupted '
                'download or save? Download or save it again')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):  # torch.save's zip format (torch >= 1.6)
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return (f'checkpoint {path} is truncated or corrupt (an '
                    f'incomplete zip archive of {size} bytes): an '
                    'interrupted download or save? Download or save it '
                    'again')
        if not any(n.endswith('data.pkl') for n in names):
            return (f'checkpoint {path} is a zip archive but not a PyTorch '
                    'checkpoint (no data.pkl inside)')
        return None
    if head[:1] == b'\x80':  # a pickle: torch's legacy format
        return None
    return (f'checkpoint {path} is not a PyTorch checkpoint (neither a zip '
            f'archive nor a pickle: it starts with {head!r}); is it the '
            'right file?')


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint for a tool, with one clear message for every way
    the file can be unusable.

    Loads through mmengine (so safe loading and ``--trust-checkpoint``
    apply).

    Args:
        path (str): Checkpoint path.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        ConfigError: The file is missing, empty, truncated, corrupt or holds
            no state dict.
        UnsafeCheckpointError: Safe loading refused it (not trusted).
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    problem = checkpoint_file_problem(path)
    if problem:
        raise ConfigError(problem)
    try:
        ckpt = _load_checkpoint(path, map_location='cpu')
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError,
            zipfile.BadZipFile, ValueError) as err:
        said = (str(err).strip().splitlines() or [''])[0][:200]
        raise ConfigError(
            f'checkpoint {path} could not be read, it is truncated or '
            f'corrupt ({type(err).__name__}: {said}): download or save it '
            'again') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(
            hasattr(v, 'shape') for v in state.values()):
        raise ConfigError(
            f'checkpoint {path} holds no state dict (a dict of tensors, '
            'alone or under "state_dict")')
    return ckpt


def checkpoint_mismatch(model: torch.nn.Module,
                        checkpoint: Union[str, dict],
                        max_keys: int = 20,
                        name: Optional[str] = None) -> Optional[str]:
    """Describe how a checkpoint does not fit ``model`` (``None`` if it
    fits): missing and unexpected keys and shape mismatches.

    Args:
        model (nn.Module): The model (or a wrapper of it).
        checkpoint (str | dict): A path, or a checkpoint already loaded
            (:func:`read_checkpoint`).
        max_keys (int): Keys listed per kind at most.
        name (str, optional): The checkpoint's name in the message
            (default: the path).

    Returns:
        str or None: The mismatch, for an ``error:`` message.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    if is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    if isinstance(checkpoint, str):
        label = name or checkpoint
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    else:
        label = name or 'the checkpoint'
        ckpt = checkpoint
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return f'{label} holds no state dict'
    state = {
        (k[7:] if k.startswith('module.') else k): v
        for k, v in state.items()
    }
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f'{k}: checkpoint {tuple(state[k].shape)} vs model '
        f'{tuple(own[k].shape)}' for k in set(own) & set(state)
        if hasattr(state[k], 'shape') and state[k].shape != own[k].shape)
    if not (missing or unexpected or shapes):
        return None

    def show(keys: List[str]) -> str:
        more = f' ... (+{len(keys) - max_keys} more)' \
            if len(keys) > max_keys else ''
        return ', '.join(keys[:max_keys]) + more

    parts = [f'checkpoint {label} does not fit the model of the config']
    if missing:
        parts.append(f'missing keys ({len(missing)}): {show(missing)}')
    if unexpected:
        parts.append(
            f'unexpected keys ({len(unexpected)}): {show(unexpected)}')
    if shapes:
        parts.append(f'shape mismatches ({len(shapes)}): {show(shapes)}')
    return '\n  '.join(parts)


def eps_from_cli(values: Sequence[float],
                 allow_tiny: Optional[bool] = None,
                 flag: str = '--allow-tiny-eps') -> List[float]:
    """Radii given on the command line in units of 1/255 -> fractions.

    A radius in (0, 1) looks like a fraction typed by mistake (``--eps 0.03``
    for 8/255 means 0.03/255).

    Args:
        values (Sequence[float]): The radii as typed.
        allow_tiny (bool, optional): ``False``: refuse radii in (0, 1)
            unless the user said so with ``flag``; ``True``: accept them;
            ``None``: accept them with a warning (tools without ``flag``).
        flag (str): The option that allows them, named in the message.

    Returns:
        list: The radii as fractions.

    Raises:
        ToolError: A radius is not in [0, 255], or is in (0, 1) and
            ``allow_tiny`` is ``False``.
    """
    out = []
    for v in values:
        if not v == v or v < 0 or v > 255:  # NaN or out of range
            raise ToolError(
                f'--eps {v:g}: radii are given in units of 1/255 and must be '
                'in [0, 255], e.g. --eps 4 8 12 16')
        out.append(v / 255.0)
    tiny = [v for v in values if 0 < v < 1]
    if tiny and allow_tiny is False:
        v = tiny[0]
        meant = min(max(int(round(v * 255)), 1), 255)
        raise ToolError(
            f'--eps {v:g}: radii are in units of 1/255, so {v:g} means '
            f'{v:g}/255 = {v / 255:.6f}, which looks like a fraction: for '
            f'{meant}/255 (= {meant / 255:.4f}) write --eps {meant}; if you '
            f'do mean {v:g}/255, add {flag}')
    small = [v for v in values if 0 < v < 0.2]
    if small and allow_tiny is None:
        warnings.warn(
            f'--eps {small}: radii are in units of 1/255, so {small[0]} '
            f'means {small[0]}/255 = {small[0] / 255:.5f}. For 8/255 '
            f'(= {8 / 255:.4f}) write --eps 8.',
            stacklevel=2)
    return out


#: Environment variables each launcher reads (set by torchrun, srun, mpirun).
LAUNCHER_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK',
            'OMPI_COMM_WORLD_SIZE'),
}

_LAUNCHER_HOW = {
    'pytorch': 'start the tool with torchrun (tools/dist_train.sh / '
    'tools/dist_test.sh CONFIG ... NUM_PROCESSES do that)',
    'slurm': 'start the tool with srun',
    'mpi': 'start the tool with Open MPI\'s mpirun',
}


def check_launcher_env(launcher: str) -> None:
    """Refuse ``--launcher pytorch|slurm|mpi`` outside the launcher that
    sets its environment (MMEngine would fail with a ``KeyError`` or a
    rendezvous traceback, or wait forever).

    Args:
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.

    Raises:
        ToolError: Variables the launcher needs are not set.
    """
    missing = [
        k for k in LAUNCHER_ENV.get(launcher, ()) if not os.environ.get(k)
    ]
    if missing:
        raise ToolError(
            f'--launcher {launcher} needs the environment its launcher sets, '
            f'but {", ".join(missing)} {"is" if len(missing) == 1 else "are"}'
            f' not set: {_LAUNCHER_HOW[launcher]}; for one process leave '
            'out --launcher')


def check_output_dir(path: str, what: str = '--work-dir') -> None:
    """Make sure ``path`` is (or can be made) a writable directory, before
    any work is done: creates it and writes and removes a probe file.

    Args:
        path (str): The directory.
        what (str): Its name in the message (the option that sets it).

    Raises:
        ToolError: A part of the path is a file, or the directory cannot be
            created or written.
    """
    full = osp.abspath(osp.expanduser(path))
    probe = full
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if osp.exists(probe) and not osp.isdir(probe):
        where = 'is a file' if probe == full else \
            f'cannot be created: {probe} is a file'
        raise ToolError(f'{what} {path}: {where}, not a directory')
    try:
        os.makedirs(full, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=full, prefix='.write_test_')
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise ToolError(f'{what} {path}: cannot create or write this '
                        f'directory ({err.strerror or err})') from None


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without GPUs.

    MMEngine's PyTorch launcher calls ``torch.cuda.set_device(LOCAL_RANK)``
    and wraps the model with ``device_ids=[LOCAL_RANK]``; both need one GPU
    per process. On a machine without CUDA we start the gloo process group
    ourselves (MMEngine then skips its own initialisation) and wrap the
    model without device ids.

    Raises:
        ToolError: CUDA is available but with fewer GPUs than processes per
            node (``LOCAL_WORLD_SIZE``): MMEngine would fail in
            ``cuda.set_device``. The message says how to run instead.
    """
    if launcher != 'pytorch':
        return
    if torch.cuda.is_available():
        per_node = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
        gpus = torch.cuda.device_count()
        if gpus < per_node:
            raise ToolError(
                f'{per_node} processes per node but only {gpus} GPU(s) '
                'visible: MMEngine puts each process on its own GPU. Start '
                f'at most {gpus} processes, or run on the CPU (gloo) with '
                'CUDA_VISIBLE_DEVICES= (empty)')
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper


def set_amp(cfg: Config, enabled: bool) -> List[str]:
    """Switch mixed-precision training on or off in one place.

    Off: ``AmpOptimWrapper`` becomes ``OptimWrapper`` and the arguments only
    ``AmpOptimWrapper`` takes (``loss_scale``, ``dtype``, ``use_fsdp``) are
    dropped, so ``--cfg-options optim_wrapper.type=OptimWrapper`` alone no
    longer fails on ``loss_scale``. On: ``OptimWrapper`` becomes
    ``AmpOptimWrapper`` with ``loss_scale='dynamic'``.

    Args:
        cfg (Config): The config, changed in place.
        enabled (bool): AMP on or off.

    Returns:
        list: What was changed (for the log), empty if nothing.

    Raises:
        ToolError: The config uses another wrapper type.
    """
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    changes = []
    if enabled:
        if kind == 'OptimWrapper':
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
            changes.append('optim_wrapper.type=AmpOptimWrapper')
        elif kind != 'AmpOptimWrapper':
            raise ToolError('AMP can only be switched on for optim_wrapper '
                            f'type OptimWrapper, the config has {kind}')
        return changes
    if kind == 'AmpOptimWrapper':
        wrapper.type = 'OptimWrapper'
        changes.append('optim_wrapper.type=OptimWrapper')
    if wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
        for key in AMP_ONLY_KEYS:
            if key in wrapper:
                wrapper.pop(key)
                changes.append(f'dropped optim_wrapper.{key}')
    return changes


def _walk(node, visit) -> None:
    """Call ``visit(d)`` on every dict of a config tree."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def set_crop_size(cfg: Config, size: Sequence[int]) -> List[str]:
    """Set the training crop size everywhere MMSeg keeps it.

    Changes every ``RandomCrop.crop_size`` and ``Pad.size`` (all pipelines,
    e.g. both datasets of PASCAL-VOC aug), ``data_preprocessor.size`` (model
    and top level), the top-level ``crop_size`` and, for slide inference,
    ``model.test_cfg.crop_size`` with the stride scaled alike. The image
    scale the pipelines resize to (``RandomResize.scale``) is left alone.

    Args:
        cfg (Config): The config, changed in place.
        size (Sequence[int]): ``(height, width)``.

    Returns:
        list: The keys changed, for the log.
    """
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ToolError(f'--crop-size {h} {w}: both must be positive')
    changed = []

    def visit(d):
        if d.get('type') == 'RandomCrop' and 'crop_size' in d:
            d['crop_size'] = (h, w)
            changed.append('RandomCrop.crop_size')
        elif d.get('type') == 'Pad' and 'size' in d:
            d['size'] = (h, w)
            changed.append('Pad.size')
        pre = d.get('data_preprocessor')
        if isinstance(pre, dict) and pre.get('size') is not None:
            pre['size'] = (h, w)
            changed.append('data_preprocessor.size')

    _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg, visit)
    if 'crop_size' in cfg:
        cfg.crop_size = (h, w)
        changed.append('crop_size')
    test_cfg = cfg.get('model', {}).get('test_cfg', None) or {}
    if test_cfg.get('mode') == 'slide':
        old_h, old_w = test_cfg.get('crop_size', (h, w))
        sh, sw = test_cfg.get('stride', (old_h, old_w))
        test_cfg['crop_size'] = (h, w)
        test_cfg['stride'] = (max(1, round(sh * h / old_h)),
                              max(1, round(sw * w / old_w)))
        changed.append('model.test_cfg.crop_size/stride')
    return sorted(set(changed))


def set_test_scale(cfg: Config, scale: Sequence[int]) -> List[str]:
    """Set the ``Resize.scale`` of the validation and test pipelines.

    Args:
        cfg (Config): The config, changed in place.
        scale (Sequence[int]): MMSeg's ``scale``: ``(long, short)`` sides
            with ``keep_ratio=True`` (MMSeg's default ``(2048, 512)``).

    Returns:
        list: The keys changed, for the log.
    """
    scale = tuple(int(v) for v in scale)
    if min(scale) < 1:
        raise ToolError(f'--test-scale {" ".join(map(str, scale))}: both '
                        'must be positive')
    changed = []

    def visit(d):
        if d.get('type') == 'Resize' and d.get('scale') is not None:
            d['scale'] = scale
            changed.append('Resize.scale')

    for key in ('val_dataloader', 'test_dataloader', 'test_pipeline',
                'val_pipeline'):
        if cfg.get(key, None) is not None:
            before = len(changed)
            _walk(cfg[key], visit)
            if len(changed) > before:
                changed.append(key)
    return sorted(set(changed))


def set_data_root(cfg: Config, root: str) -> List[str]:
    """Point every dataset of the config at ``root`` (MMSeg's dataset bases
    repeat ``data_root`` in each dataset, e.g. three times for PASCAL-VOC
    aug).

    Args:
        cfg (Config): The config, changed in place.
        root (str): Dataset folder.

    Returns:
        list: The keys changed, for the log.
    """
    changed = []

    def visit(d):
        if 'data_root' in d and d.get('type') is not None:
            d['data_root'] = root
            changed.append(f'{d["type"]}.data_root')

    # every dataset dict, also the base files' leftovers (dataset_train ...)
    _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg, visit)
    if 'data_root' in cfg:
        cfg.data_root = root
        changed.append('data_root')
    return sorted(set(changed))


def add_runner_arguments(parser: argparse.ArgumentParser,
                         trust_help: str) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share (as in
    MMSeg's tools): ``--test-scale``, ``--trust-checkpoint``,
    ``--cfg-options``, ``--launcher``, ``--debug``, ``--local_rank``.

    Args:
        parser (ArgumentParser): The tool's parser.
        trust_help (str): What ``--trust-checkpoint`` applies to.
    """
    parser.add_argument(
        '--test-scale',
        nargs=2,
        type=int,
        metavar=('LONG', 'SHORT'),
        help='Resize scale of the validation/test pipelines (MMSeg: 2048 '
        '512)')
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help=f'allow full unpickling of this checkpoint ({trust_help}) if '
        'safe loading refuses it; it can run code stored in the file, so '
        'only for files you trust (repeatable; * = all)')
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
    parser.add_argument(
        '--debug',
        action='store_true',
        help='show the traceback of user errors too (also '
        'MMSEG_ROBUST_DEBUG=1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(
        parser: argparse.ArgumentParser,
        argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, and export ``LOCAL_RANK`` for MMEngine as MMSeg's tools do."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args
