"""Helpers shared by the command-line tools."""
import os.path as osp
import warnings
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config

__all__ = [
    'load_config', 'set_work_dir', 'checkpoint_mismatch', 'eps_from_cli',
    'ToolError', 'setup_cpu_distributed'
]


class ToolError(SystemExit):
    """A user error in a command-line tool: exits with the message."""

    def __init__(self, message: str):
        super().__init__(f'error: {message}')


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
        problems = model_requirement_problems(cfg.get('model'),
                                              cfg.get('custom_imports'))
        if problems:
            raise ToolError(problems[0]) from None
        raise
    problems = model_requirement_problems(cfg.get('model'))
    if problems:
        raise ToolError(problems[0])
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str], config_path: str
                 ) -> None:
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


def checkpoint_mismatch(model: torch.nn.Module, checkpoint: str,
                        max_keys: int = 20) -> Optional[str]:
    """Describe how a checkpoint does not fit ``model`` (``None`` if it
    fits): missing and unexpected keys and shape mismatches."""
    from mmengine.model import is_model_wrapper
    from mmengine.runner.checkpoint import _load_checkpoint
    if is_model_wrapper(model):
        model = model.module
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        return f'{checkpoint} holds no state dict'
    state = {(k[7:] if k.startswith('module.') else k): v
             for k, v in state.items()}
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

    parts = [f'checkpoint {checkpoint} does not fit the model of the config']
    if missing:
        parts.append(f'missing keys ({len(missing)}): {show(missing)}')
    if unexpected:
        parts.append(
            f'unexpected keys ({len(unexpected)}): {show(unexpected)}')
    if shapes:
        parts.append(f'shape mismatches ({len(shapes)}): {show(shapes)}')
    return '\n  '.join(parts)


def eps_from_cli(values: Sequence[float]) -> List[float]:
    """Radii given on the command line in units of 1/255 -> fractions."""
    out = []
    for v in values:
        if not v == v or v < 0 or v > 255:  # NaN or out of range
            raise ToolError(
                f'--eps {v}: radii are given in units of 1/255 and must be '
                'in [0, 255], e.g. --eps 4 8 12 16')
        out.append(v / 255.0)
    small = [v for v in values if 0 < v < 0.2]
    if small:
        warnings.warn(
            f'--eps {small}: radii are in units of 1/255, so {small[0]} '
            f'means {small[0]}/255 = {small[0] / 255:.5f}. For 8/255 '
            f'(= {8 / 255:.4f}) write --eps 8.',
            stacklevel=2)
    return out


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without GPUs.

    MMEngine's PyTorch launcher calls ``torch.cuda.set_device`` and wraps
    the model with ``device_ids=[LOCAL_RANK]``; both need CUDA. On a
    machine without it we start the gloo process group ourselves (MMEngine
    then skips its own initialisation) and wrap the model without device
    ids.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper
