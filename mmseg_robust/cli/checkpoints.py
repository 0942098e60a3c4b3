"""Checkpoint files for the tools: what is wrong with one (found without
unpickling it), reading one with a clear message for every way it can be
unusable, and how one does not fit a model.
"""
import os.path as osp
import pickle
import zipfile
from typing import List, Optional, Union

import torch

from mmseg_robust.compat.checkpoint import UnsafeCheckpointError
from mmseg_robust.errors import ConfigError

__all__ = ['checkpoint_file_problem', 'read_checkpoint', 'checkpoint_mismatch']


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
    from mmengine.runner import CheckpointLoader
    problem = checkpoint_file_problem(path)
    if problem:
        raise ConfigError(problem)
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
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
    from mmengine.runner import CheckpointLoader
    if is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    if isinstance(checkpoint, str):
        label = name or checkpoint
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
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
