"""Safe loading of mmengine checkpoints, on every supported torch (>= 2.1).

mmengine 0.10.x loads local checkpoints with ``torch.load(filename,
map_location=...)``. Before torch 2.6 that fully unpickles the file, which
runs any code stored in it; since torch 2.6 it means ``weights_only=True``,
which refuses the few Python objects mmengine itself writes into checkpoints
(the message hub's ``HistoryBuffer`` with its numpy arrays, numpy scalars),
so ``--resume`` and ``load_from`` of mmengine's own checkpoints break.

This patch re-registers mmengine's local-file loader with one that only
unpickles tensors, plain containers and exactly what mmengine 0.10.x writes
besides (:func:`mmengine_safe_globals`):

* torch >= 2.5 (:func:`loading_method` ``'weights_only'``): ``torch.load``
  with ``weights_only=True`` and that allow-list, for the duration of the
  load only (:class:`torch.serialization.safe_globals`);
* torch 2.1 - 2.4 (``'restricted_unpickler'``), whose ``weights_only=True``
  takes no allow-list: ``torch.load`` with a restricted unpickler as its
  ``pickle_module`` -- Python's :class:`pickle.Unpickler` whose
  ``find_class`` hands out only torch's own weights-only types and the same
  allow-list, and imports nothing.

On every torch, a TorchScript archive is refused before ``torch.load`` sees
it (torch < 2.6 hands one to ``torch.jit.load`` even with
``weights_only=True``, CVE-2025-32434). A file that needs anything else is
refused with :class:`UnsafeCheckpointError`, which names the refused types
and says how to opt in. Full unpickling -- which runs any code stored in the
file -- happens only for files marked trusted:

* ``MMSEG_ROBUST_TRUST_CHECKPOINTS=/path/a.pth:/path/b.pth`` (``*``: every
  file), or
* ``tools/train.py`` / ``tools/test.py ... --trust-checkpoint /path/a.pth``,
  or
* ``mmseg_robust.compat.checkpoint.trust_checkpoints('/path/a.pth')``,

and then with a warning naming the file. What this does not cover (torch's
own reader below the unpickler, remote files): ``docs/compat.md``.
"""
import _compat_pickle
import codecs
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import torch

__all__ = [
    'UnsafeCheckpointError', 'mmengine_safe_globals', 'safe_torch_load',
    'load_from_local', 'trust_checkpoints', 'is_trusted', 'ENV_TRUST',
    'loading_method', 'globals_in_checkpoint', 'unsafe_globals_in_checkpoint',
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


def loading_method() -> str:
    """How this torch loads a checkpoint safely.

    Returns:
        str: ``'weights_only'`` where torch's ``weights_only=True`` loading
        takes a caller's allow-list (:class:`torch.serialization.
        safe_globals`, torch >= 2.5); else ``'restricted_unpickler'``
        (torch 2.1 - 2.4): ``torch.load`` with a :class:`pickle.Unpickler`
        whose ``find_class`` only hands out the allow-list.
    """
    if hasattr(torch.serialization, 'safe_globals'):
        return 'weights_only'
    return 'restricted_unpickler'


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


def _latin1_encode(obj: Any, encoding: str = 'utf-8') -> bytes:
    """``_codecs.encode`` as the allow-list offers it: pickle protocol 2
    writes ``bytes`` (the raw data of numpy arrays) as
    ``_codecs.encode(str, 'latin1')``; nothing else is encoded."""
    if not isinstance(obj, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(
            f'refused _codecs.encode of a {type(obj).__name__} with '
            f'{encoding!r}: safe loading only decodes the latin1 strings '
            'pickle writes for bytes')
    return codecs.encode(obj, 'latin1')


def mmengine_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The allow-list: what mmengine 0.10.x writes beyond tensors.

    * ``mmengine.logging.HistoryBuffer`` (message hub ``log_scalars``) and
      the ``getattr(HistoryBuffer, 'min' | 'max' | 'current' | 'mean')``
      references in its state, through a ``getattr`` that allows nothing
      else;
    * numpy arrays (``_reconstruct``, ``ndarray``, ``dtype`` and the dtype
      classes of booleans, numbers and strings) and numpy scalars
      (``scalar``), under both ``numpy.core`` (numpy 1) and ``numpy._core``
      (numpy 2) module names, so checkpoints load across numpy versions;
    * ``_codecs.encode``, which protocol 2 uses for ``bytes`` (torch >= 2.5
      allows it by default), restricted to latin1 strings.

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
        (_history_buffer_method, 'builtins.getattr'),
        (_latin1_encode, '_codecs.encode')
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


def _entry_name(entry: Union[Callable, Tuple[Callable, str]]) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def _allowed_names() -> Set[str]:
    return {_entry_name(entry) for entry in mmengine_safe_globals()}


def _torch_allowed_globals() -> Dict[str, Any]:
    """What torch's own ``weights_only`` unpickler allows by default
    (tensors, storages, dtypes, ``torch.Size``, ``OrderedDict``, its
    rebuild functions)."""
    from torch import _weights_only_unpickler
    return dict(_weights_only_unpickler._get_allowed_globals())


def _plain_dtype(*args: Any) -> Any:
    """``numpy.dtype`` as the restricted unpickler offers it: no object
    dtypes (as torch's ``weights_only`` refuses them)."""
    import numpy as np
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f'refused numpy.dtype{args!r}: safe loading does not allow '
            'numpy object arrays')
    return dtype


def _restricted_globals() -> Dict[str, Any]:
    """``module.name`` -> object: everything the restricted unpickler may
    hand out (torch's own weights-only types and the allow-list)."""
    allowed = _torch_allowed_globals()
    for entry in mmengine_safe_globals():
        allowed[_entry_name(entry)] = \
            entry[0] if isinstance(entry, tuple) else entry
    allowed['numpy.dtype'] = _plain_dtype
    return allowed


def _python3_name(module: str, name: str) -> str:
    """``module.name`` under Python 3 names: pickle protocol 2 (what
    ``torch.save`` writes) names e.g. ``builtins.getattr``
    ``__builtin__.getattr``, which unpickling maps back (``fix_imports``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f'{module}.{name}'


class _RestrictedUnpickler(pickle.Unpickler):
    """:class:`pickle.Unpickler` whose ``find_class`` imports nothing and
    hands out only :func:`_restricted_globals` (the "restricting globals"
    recipe of Python's :mod:`pickle` documentation). Every global a pickle
    refers to -- ``GLOBAL``, ``STACK_GLOBAL``, ``INST``, ``OBJ`` and the
    extension registry all go through ``find_class`` -- is looked up in
    that table."""

    allowed: Dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = _python3_name(module, name)
        if full in self.allowed:
            return self.allowed[full]
        raise pickle.UnpicklingError(
            f'GLOBAL {full} was not an allowed global')


def _restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load``: its ``Unpickler`` and
    ``load`` are restricted (torch subclasses the ``Unpickler`` and calls
    ``load`` for the legacy format's headers)."""
    unpickler = type('RestrictedUnpickler', (_RestrictedUnpickler, ),
                     dict(allowed=_restricted_globals()))

    def load(file, **kwargs):
        return unpickler(file, **kwargs).load()

    module = types.ModuleType('mmseg_robust.compat.restricted_pickle')
    module.Unpickler = unpickler
    module.load = load
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _is_torchscript_archive(filename: str) -> bool:
    """Whether ``torch.load`` would hand the file to ``torch.jit.load`` (it
    does so even with ``weights_only=True`` before torch 2.6); decided the
    way ``torch.load`` decides it."""
    ser = torch.serialization
    try:
        with open(filename, 'rb') as f:
            if not ser._is_zipfile(f):
                return False
            with ser._open_zipfile_reader(f) as zf:
                return bool(ser._is_torchscript_zip(zf))
    except Exception:  # not readable as a zip: torch.load fails as well
        return False


def _pickle_globals(stream: Any) -> Set[str]:
    """The ``module.name`` globals a pickle refers to, read with
    :mod:`pickletools` (nothing is unpickled). ``STACK_GLOBAL`` (protocol
    4, which ``torch.save`` does not write) is read from the two strings
    pushed before it, as far as they can be followed through the memo."""
    found: Set[str] = set()
    strings: List[Any] = []
    memo: Dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ('GLOBAL', 'INST'):
            found.add(_python3_name(*arg.split(' ', 1)))
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8',
                         'UNICODE'):
            strings.append(arg)
        elif op.name in ('BINPUT', 'LONG_BINPUT', 'PUT'):
            memo[int(arg)] = strings[-1] if strings else None
        elif op.name == 'MEMOIZE':
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ('BINGET', 'LONG_BINGET', 'GET'):
            strings.append(memo.get(int(arg)))
        elif op.name == 'STACK_GLOBAL':
            if len(strings) >= 2 and all(
                    isinstance(s, str) for s in strings[-2:]):
                found.add(_python3_name(strings[-2], strings[-1]))
            else:
                found.add('<STACK_GLOBAL>')
        if op.name not in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8',
                           'UNICODE', 'BINPUT', 'LONG_BINPUT', 'PUT',
                           'MEMOIZE', 'BINGET', 'LONG_BINGET', 'GET'):
            strings.append(None)  # something else was pushed in between
    return found


def globals_in_checkpoint(filename: str) -> Set[str]:
    """The ``module.name`` globals the pickles of a checkpoint refer to,
    found without unpickling them: ``data.pkl`` of the zip format
    (``torch.save`` since torch 1.6), or the pickles of the legacy format
    (``_use_new_zipfile_serialization=False``).

    Args:
        filename (str): Path of the checkpoint.

    Returns:
        set: The globals, e.g. ``{'torch._utils._rebuild_tensor_v2',
        'collections.OrderedDict', ...}``.

    Raises:
        ValueError: The file is neither (not a checkpoint, or torch's
            tar format of before 2018).
    """
    ser = torch.serialization
    with open(filename, 'rb') as f:
        if ser._is_zipfile(f):
            with ser._open_zipfile_reader(f) as zf:
                if not zf.has_record('data.pkl'):
                    raise ValueError(f'{filename} has no data.pkl')
                return _pickle_globals(io.BytesIO(zf.get_record('data.pkl')))
        if f.read(1) != b'\x80':
            raise ValueError(f'{filename} is not a zip checkpoint or a '
                             'pickle')
        f.seek(0)
        # magic number, protocol version, system info, the object, the
        # storage keys; then the storages' raw bytes
        found: Set[str] = set()
        for _ in range(5):
            found |= _pickle_globals(f)
        return found


def unsafe_globals_in_checkpoint(filename: str) -> List[str]:
    """The globals of a zip checkpoint that torch's ``weights_only``
    loading does not allow by default (what the allow-list must cover; the
    same as :func:`torch.serialization.get_unsafe_globals_in_checkpoint`,
    torch >= 2.5, on every torch).

    Args:
        filename (str): Path of the checkpoint.

    Returns:
        list: Sorted ``module.name`` strings.
    """
    allowed = _torch_allowed_globals()
    return sorted(
        g for g in globals_in_checkpoint(filename) if g not in allowed)


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


def _refused_globals(filename: str, err: Optional[Exception]) -> List[str]:
    """The globals of ``filename`` that safe loading does not allow."""
    refused: List[str] = []
    try:
        allowed = _allowed_names()
        refused = [
            g for g in unsafe_globals_in_checkpoint(filename)
            if g not in allowed
        ]
    except Exception:  # not a zip checkpoint: read the message instead
        pass
    if not refused and err is not None:
        refused = re.findall(r'GLOBAL (\S+) was not an allowed global',
                             str(err))
        refused += re.findall(r'but got (<class [^>]+>)', str(err))
        refused += re.findall(r'refused (\S+\(.*?\)):', str(err))
    return refused


def _how_refused() -> str:
    if loading_method() == 'weights_only':
        return ('torch.load with weights_only=True and the allow-list of '
                'mmengine\'s own types')
    return (f'torch {torch.__version__} has no allow-list for '
            'weights_only=True, so: torch.load with an unpickler restricted '
            'to torch\'s weights-only types and the allow-list of '
            'mmengine\'s own types')


def _refuse(filename: str, what: str, said: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f'error: checkpoint {filename} was not loaded: {what}. If you '
        'trust this file (you made it, or its source is trusted), set '
        f'{ENV_TRUST}={filename} (several files separated by '
        f'{os.pathsep!r}; * trusts every file), or pass --trust-checkpoint '
        f'{filename} to tools/train.py or tools/test.py, or call '
        'mmseg_robust.compat.checkpoint.trust_checkpoints(PATH). '
        f'{said}')


def _trusted_load(filename: str, map_location: Optional[Any], how: str,
                  refused: str) -> Any:
    key = osp.realpath(filename)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f'{filename} is fully unpickled (torch.load with '
            f'weights_only=False) because {how} marks it trusted; safe '
            f'loading refused {refused}. Full unpickling runs any code '
            'stored in the file.',
            UserWarning,
            stacklevel=3)
    return torch.load(filename, map_location=map_location, weights_only=False)


def _restricted_load(filename: str, map_location: Optional[Any]) -> Any:
    """Only the allow-list is unpickled (see :func:`loading_method`)."""
    if loading_method() == 'weights_only':
        with torch.serialization.safe_globals(mmengine_safe_globals()):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    return torch.load(
        filename,
        map_location=map_location,
        pickle_module=_restricted_pickle_module(),
        weights_only=False)


def safe_torch_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint unpickling only tensors, plain containers and
    mmengine's allow-list; fully unpickle it only if it is trusted.

    torch >= 2.5: ``weights_only=True`` with the allow-list; torch 2.1 -
    2.4: a restricted unpickler (:func:`loading_method`). A TorchScript
    archive is refused on every torch (older ones hand it to
    ``torch.jit.load`` whatever ``weights_only`` says).

    Args:
        filename (str): Path of the checkpoint.
        map_location: Same as :func:`torch.load`.

    Returns:
        The loaded object.

    Raises:
        UnsafeCheckpointError: The file holds objects beyond the allow-list,
            or is a TorchScript archive, and is not trusted. Nothing of it
            was executed.
    """
    if _is_torchscript_archive(filename):
        how = is_trusted(filename)
        if how is None:
            raise _refuse(
                filename, 'it is a TorchScript archive (torch.jit.save), '
                'not a checkpoint, and torch.load would hand it to '
                'torch.jit.load, which runs the code the archive holds; safe '
                'loading refuses it', 'Load a TorchScript model with '
                'torch.jit.load only if you trust it.')
        return _trusted_load(filename, map_location, how,
                             'it (a TorchScript archive)')
    try:
        return _restricted_load(filename, map_location)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename, err)
        how = is_trusted(filename)
        if how is None:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = [ln for ln in lines if 'WeightsUnpickler error' in ln]
            said = (detail or lines or [repr(err)])[0]
            who = 'torch' if loading_method() == 'weights_only' \
                else 'the restricted unpickler'
            raise _refuse(
                filename, 'it holds Python objects that safe loading '
                f'({_how_refused()}) refuses: '
                f'{", ".join(refused) or "see below"}. Unpickling them '
                'could run code stored in the file',
                f'{who} said: {said}') from err
        return _trusted_load(filename, map_location, how, ', '.join(refused)
                             or 'part of it')


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """Local-file loader for mmengine's ``CheckpointLoader`` (same name and
    contract as mmengine's own, which it replaces)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def needed() -> Optional[str]:
    """``None`` where the loader must be replaced, else why not. It must be
    on every supported torch: before 2.6 mmengine's loader fully unpickles
    (runs any code in the file), since 2.6 it refuses mmengine's own
    checkpoints."""
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
    if _torch_version() >= (2, 6):
        why = (f'torch {torch.__version__} loads with weights_only=True, '
               'which refuses mmengine\'s own checkpoints')
    else:
        why = (f'torch {torch.__version__} loads with weights_only=False, '
               'which runs any code stored in a checkpoint')
    if loading_method() == 'weights_only':
        now = 'weights_only=True plus an allow-list'
    else:
        now = ('an unpickler restricted to torch\'s weights-only types plus '
               'an allow-list')
    return (f'{why}, so mmengine now loads local checkpoints with {now} of '
            'the types mmengine itself writes; other files are refused '
            f'unless trusted ({ENV_TRUST})')


def undo() -> None:
    """Give mmengine back its own local-file loader."""
    from mmengine.runner.checkpoint import CheckpointLoader
    if _original_loader is not None and \
            CheckpointLoader._schemes.get('') is load_from_local:
        CheckpointLoader.register_scheme(
            prefixes='', loader=_original_loader, force=True)
