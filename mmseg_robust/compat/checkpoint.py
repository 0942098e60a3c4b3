"""Safe loading of mmengine checkpoints with ``torch >= 2.6``.

mmengine 0.10.x loads local checkpoints with ``torch.load(filename,
map_location=...)``. Since torch 2.6 that means ``weights_only=True``, which
refuses the few Python objects mmengine itself writes into checkpoints (the
message hub's ``HistoryBuffer`` with its numpy arrays, numpy scalars), so
``--resume`` and ``load_from`` of mmengine's own checkpoints break.

This patch re-registers mmengine's local-file loader with one that keeps
``weights_only=True`` and allow-lists, for the duration of the load only
(:class:`torch.serialization.safe_globals`), exactly what mmengine 0.10.x
writes (:func:`mmengine_safe_globals`). A file that needs anything else is
refused with :class:`UnsafeCheckpointError`, which names the refused types
and says how to opt in. Full unpickling -- which runs any code stored in the
file -- happens only for files marked trusted:

* ``MMSEG_ROBUST_TRUST_CHECKPOINTS=/path/a.pth:/path/b.pth`` (``*``: every
  file), or
* ``tools/train.py`` / ``tools/test.py ... --trust-checkpoint /path/a.pth``,
  or
* ``mmseg_robust.compat.checkpoint.trust_checkpoints('/path/a.pth')``,

and then with a warning naming the file. On torch < 2.6 the patch is not
applied: mmengine loads with full unpickling there, as it always has.
"""
import os
import os.path as osp
import pickle
import re
import warnings
from typing import Any, Callable, List, Optional, Set, Tuple, Union

import torch

__all__ = [
    'UnsafeCheckpointError', 'mmengine_safe_globals', 'safe_torch_load',
    'load_from_local', 'trust_checkpoints', 'is_trusted', 'ENV_TRUST',
    'needed', 'apply', 'undo'
]

#: Environment variable listing trusted checkpoint files (``os.pathsep``
#: separated; ``*`` trusts every file).
ENV_TRUST = 'MMSEG_ROBUST_TRUST_CHECKPOINTS'

_trusted: Set[str] = set()
_warned: Set[str] = set()
_original_loader: Optional[Callable] = None
# the statistics methods HistoryBuffer pickles by reference (protocol 2
# writes them as getattr(HistoryBuffer, name))
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds Python objects that safe loading refuses."""


def _torch_version() -> Tuple[int, int]:
    return tuple(int(v) for v in re.findall(r'\d+', torch.__version__)[:2])


def _history_buffer_method(obj: Any, name: str) -> Callable:
    """``getattr`` as the allow-list offers it: only ``HistoryBuffer``'s own
    statistics methods, which its pickled state refers to."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}): safe loading only allows '
        'the statistics methods of mmengine.logging.HistoryBuffer '
        f'({", ".join(_HISTORY_BUFFER_METHODS)})')


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The allow-list: what mmengine 0.10.x writes beyond tensors.

    * ``mmengine.logging.HistoryBuffer`` (message hub ``log_scalars``) and
      the ``getattr(HistoryBuffer, 'min' | 'max' | 'current' | 'mean')``
      references in its state, through a ``getattr`` that allows nothing
      else;
    * numpy arrays (``_reconstruct``, ``ndarray``, ``dtype`` and the dtype
      classes of booleans, numbers and strings) and numpy scalars
      (``scalar``), under both ``numpy.core`` (numpy 1) and ``numpy._core``
      (numpy 2) module names, so checkpoints load across numpy versions.

    ``collections.OrderedDict`` and plain containers are allowed by torch
    already. Object arrays are not allowed.

    Returns:
        list: Entries for :class:`torch.serialization.safe_globals`.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    reconstruct = np.ndarray(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    entries: List[Union[Callable, Tuple[Callable, str]]] = [
        HistoryBuffer, np.ndarray, np.dtype,
        (_history_buffer_method, 'builtins.getattr')
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((reconstruct, f'{module}._reconstruct'))
        entries.append((scalar, f'{module}.scalar'))
    # numpy >= 1.25: np.dtype('f8') is an instance of
    # numpy.dtypes.Float64DType,
    # which the unpickler must be allowed to build
    dtype_classes = {type(np.dtype(code)) for code in '?bhilqBHILQefdgFDGSU'}
    entries.extend(sorted(dtype_classes - {np.dtype}, key=str))
    return entries


def _allowed_names() -> Set[str]:
    names = set()
    for entry in mmengine_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def _env_trusted() -> List[str]:
    value = os.environ.get(ENV_TRUST, '')
    return [v for v in value.split(os.pathsep) if v.strip()]


def is_trusted(filename: str) -> Optional[str]:
    """How ``filename`` was marked trusted, or ``None`` if it was not.

    Args:
        filename (str): A checkpoint path.

    Returns:
        str or None: ``'MMSEG_ROBUST_TRUST_CHECKPOINTS'`` or
        ``'trust_checkpoints()'`` (also used by ``--trust-checkpoint``).
    """
    path = osp.realpath(osp.expanduser(filename))
    env = _env_trusted()
    if '*' in env or path in {osp.realpath(osp.expanduser(p)) for p in env}:
        return ENV_TRUST
    if '*' in _trusted or path in _trusted:
        return 'trust_checkpoints()'
    return None


class trust_checkpoints:
    """Mark checkpoint files as trusted: they may be fully unpickled.

    Works as a call (the files stay trusted) or as a context manager (they
    are trusted inside the ``with`` block only)::

        trust_checkpoints('work_dirs/old/iter_4000.pth')
        with trust_checkpoints('/downloads/model.pth'):
            runner.load_checkpoint('/downloads/model.pth')

    Full unpickling runs any code stored in the file: trust only files you
    made or that come from a source you trust. ``'*'`` trusts every file.

    Args:
        *paths (str): Checkpoint paths.
    """

    def __init__(self, *paths: str) -> None:
        self.added = []
        for p in paths:
            key = '*' if p == '*' else osp.realpath(osp.expanduser(p))
            if key not in _trusted:
                _trusted.add(key)
                self.added.append(key)

    def __enter__(self) -> 'trust_checkpoints':
        return self

    def __exit__(self, *exc) -> None:
        for key in self.added:
            _trusted.discard(key)


def _refused_globals(filename: str, err: Exception) -> List[str]:
    """The globals of ``filename`` that safe loading does not allow."""
    refused: List[str] = []
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
        allowed = _allowed_names()
        refused = sorted(g for g in found if g not in allowed)
    except Exception:  # not a zip checkpoint: read torch's message instead
        pass
    if not refused:
        refused = re.findall(r'GLOBAL (\S+) was not an allowed global',
                             str(err))
        refused += re.findall(r'but got (<class [^>]+>)', str(err))
    return refused


def safe_torch_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint with ``weights_only=True`` and mmengine's allow-list;
    fully unpickle it only if it is trusted.

    Args:
        filename (str): Path of the checkpoint.
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded object.

    Raises:
        UnsafeCheckpointError: The file holds objects beyond the allow-list
            and is not trusted. Nothing of it was executed.
    """
    try:
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename, err)
        how = is_trusted(filename)
        if how is None:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = [ln for ln in lines if 'WeightsUnpickler error' in ln]
            said = (detail or lines or [repr(err)])[0]
            raise UnsafeCheckpointError(
                f'error: checkpoint {filename} was not loaded: it holds '
                'Python objects that safe loading (torch.load with '
                'weights_only=True and the allow-list of mmengine\'s own '
                f'types) refuses: {", ".join(refused) or "see below"}. '
                'Unpickling them could run code stored in the file. If you '
                'trust this file (you made it, or its source is trusted), '
                f'set {ENV_TRUST}={filename} (several files separated by '
                f'{os.pathsep!r}; * trusts every file), or pass '
                f'--trust-checkpoint {filename} to tools/train.py or '
                'tools/test.py, or call '
                'mmseg_robust.compat.checkpoint.trust_checkpoints(PATH). '
                f'torch said: {said}') from err
        key = osp.realpath(filename)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f'{filename} is fully unpickled (torch.load with '
                f'weights_only=False) because {how} marks it trusted; safe '
                f'loading refused {", ".join(refused) or "part of it"}. '
                'Full unpickling runs any code stored in the file.',
                UserWarning,
                stacklevel=2)
        return torch.load(
            filename, map_location=map_location, weights_only=False)


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """Local-file loader for mmengine's ``CheckpointLoader`` (same name and
    contract as mmengine's own, which it replaces)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def needed() -> Optional[str]:
    """``None`` where the loader must be replaced, else why not."""
    if _torch_version() < (2, 6):
        return (f'torch {torch.__version__} < 2.6 loads with '
                'weights_only=False by default: mmengine reads its '
                'checkpoints as it always has')
    import mmengine
    from mmengine.runner import checkpoint as mm_ckpt
    if tuple(int(v) for v in re.findall(r'\d+', mmengine.__version__)[:1]) \
            >= (1, ):
        return f'mmengine {mmengine.__version__} >= 1.0 is not patched'
    current = mm_ckpt.CheckpointLoader._schemes.get('')
    if current is not mm_ckpt.load_from_local:
        return (f'mmengine\'s local checkpoint loader was already replaced '
                f'by {current!r}; left alone')
    return None


def apply() -> str:
    """Register :func:`load_from_local` for local files.

    Returns:
        str: What was done, for the one-time announcement.
    """
    global _original_loader
    from mmengine.runner.checkpoint import CheckpointLoader
    _original_loader = CheckpointLoader._schemes.get('')
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    return (f'torch {torch.__version__} loads with weights_only=True, so '
            'mmengine now loads local checkpoints with weights_only=True plus '
            'an allow-list of the types mmengine itself writes; other files '
            f'are refused unless trusted ({ENV_TRUST})')


def undo() -> None:
    """Give mmengine back its own local-file loader."""
    from mmengine.runner.checkpoint import CheckpointLoader
    if _original_loader is not None and \
            CheckpointLoader._schemes.get('') is load_from_local:
        CheckpointLoader.register_scheme(
            prefixes='', loader=_original_loader, force=True)
