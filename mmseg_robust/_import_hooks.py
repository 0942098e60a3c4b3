"""Run a function right after a given module has been imported.

``import mmseg_robust`` must stay light (the attacks need only torch), yet
its compatibility patches and its MMSeg registrations must be in place as
soon as MMSeg or MMEngine are used. :func:`when_imported` gives that: the
callback runs at once if the module is already imported, otherwise right
after the module's own code has run, wherever the import comes from
(``import mmseg``, MMEngine's registry, ``custom_imports``, ...).

The mechanism is one finder at the front of :data:`sys.meta_path` that only
answers for the module names it waits for. It asks the other finders for the
real spec and wraps its loader so that the callbacks run after
``exec_module``; the module itself keeps its real loader (``__loader__`` and
``__spec__.loader`` are restored before its code runs). The finder leaves
:data:`sys.meta_path` once nothing is waited for.
"""
import sys
import threading
from typing import Callable, Dict, List, Set

__all__ = ['when_imported', 'cancel', 'executing', 'waiting_for']

_callbacks: Dict[str, List[Callable]] = {}
_executing: Set[str] = set()
_lock = threading.RLock()


class _Loader:
    """Delegates to the real loader; runs the callbacks after exec."""

    def __init__(self, loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # the module sees its real loader, nothing of ours stays visible
        module.__loader__ = self._loader
        if getattr(module, '__spec__', None) is not None:
            module.__spec__.loader = self._loader
        _executing.add(self._name)
        try:
            self._loader.exec_module(module)
        finally:
            _executing.discard(self._name)
        _fire(self._name)


class _Finder:
    """Meta-path finder answering only for the awaited module names."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _callbacks:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec  # namespace package or legacy loader: not ours
        spec.loader = _Loader(spec.loader, fullname)
        return spec

    def invalidate_caches(self) -> None:
        pass


_finder = _Finder()


def _sync_finder() -> None:
    """Keep the finder on ``sys.meta_path`` exactly while it is needed."""
    present = any(f is _finder for f in sys.meta_path)
    if _callbacks and not present:
        sys.meta_path.insert(0, _finder)
    elif not _callbacks and present:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not _finder]


def _fire(name: str) -> None:
    with _lock:
        callbacks = _callbacks.pop(name, [])
        _sync_finder()
    for callback in callbacks:
        callback()


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once ``name`` is imported (now, if it is).

    Args:
        name (str): Full module name, e.g. ``'mmseg'``.
        callback (callable): Called without arguments, once. Exceptions it
            raises propagate out of the import statement that triggered it.
    """
    module = sys.modules.get(name)
    if module is not None and name not in _executing:
        callback()
        return
    with _lock:
        _callbacks.setdefault(name, []).append(callback)
        _sync_finder()


def cancel(name: str, callback: Callable[[], None]) -> bool:
    """Forget a callback that has not run yet.

    Returns:
        bool: Whether it was waiting.
    """
    with _lock:
        waiting = _callbacks.get(name, [])
        if callback not in waiting:
            return False
        waiting.remove(callback)
        if not waiting:
            del _callbacks[name]
        _sync_finder()
        return True


def executing(name: str) -> bool:
    """Whether the code of awaited module ``name`` is running right now
    (it is imported but not finished)."""
    return name in _executing


def waiting_for() -> List[str]:
    """Module names that still have callbacks waiting."""
    return sorted(_callbacks)
