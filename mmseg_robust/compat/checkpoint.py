"""Loading mmengine checkpoints with ``torch >= 2.6``.

mmengine 0.10.7 calls ``torch.load(filename, map_location=...)``. Since torch
2.6 that means ``weights_only=True``, which refuses the Python objects
mmengine itself writes into checkpoints (the message hub's ``HistoryBuffer``,
numpy scalars, ...), so ``--resume`` and ``load_from`` of mmengine's own
checkpoints break.

We re-register mmengine's local-file loader. It first tries the safe
``weights_only=True`` load (enough for plain weight files such as converted
backbones). If the file holds other Python objects it falls back to full
unpickling -- what mmengine did on every torch before 2.6 -- and says so once
per file. Set ``MMSEG_ROBUST_WEIGHTS_ONLY=1`` to forbid the fallback.
"""
import os
import os.path as osp
import pickle
from typing import Any, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

_ENV_STRICT = 'MMSEG_ROBUST_WEIGHTS_ONLY'
_warned = set()


def torch_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """``torch.load`` that prefers ``weights_only=True`` and falls back.

    Args:
        filename (str): Path of the checkpoint.
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded object.

    Raises:
        pickle.UnpicklingError: If the file needs full unpickling and
            ``MMSEG_ROBUST_WEIGHTS_ONLY=1`` is set.
    """
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if os.environ.get(_ENV_STRICT, '0') not in ('', '0'):
            raise pickle.UnpicklingError(
                f'{filename} holds Python objects beyond tensors and '
                f'{_ENV_STRICT} is set, so it is not unpickled. Unset it to '
                f'load checkpoints you trust. torch said: {err}') from err
        if filename not in _warned:
            _warned.add(filename)
            print_log(
                f'{filename} holds Python objects beyond tensors (mmengine '
                'checkpoints store the message hub, optimizer and scheduler '
                'states); loading it with weights_only=False as mmengine did '
                f'before torch 2.6. Only load checkpoints you trust; set '
                f'{_ENV_STRICT}=1 to refuse such files.',
                logger='current')
        return torch.load(
            filename, map_location=map_location, weights_only=False)


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """Local-file loader for mmengine's :class:`CheckpointLoader`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch_load(filename, map_location=map_location)


def install_checkpoint_loader() -> None:
    """Register :func:`load_from_local` as mmengine's local-file loader."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
