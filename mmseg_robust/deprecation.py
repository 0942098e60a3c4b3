"""Old import paths that still work for one release, with a
``DeprecationWarning`` that names the new one.

A package keeps a moved name with :func:`moved_names` (its module-level
``__getattr__``); a moved module keeps its old path as a small shim that
re-exports the new module and calls :func:`warn_moved_module`. Importing
either package stays as light as before: the new home is imported on first
use of the old name.
"""
import importlib
import warnings
from typing import Callable, Dict

__all__ = ['moved_names', 'warn_moved_module', 'REMOVAL']

#: When the old paths go.
REMOVAL = 'the next release'


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f'{old} is deprecated and goes in {REMOVAL}: use {new}',
        DeprecationWarning,
        stacklevel=stacklevel + 1)


def moved_names(package: str, names: Dict[str, str], modules=()) -> Callable:
    """A module-level ``__getattr__`` for ``package`` that serves moved names
    from their new homes, with a ``DeprecationWarning`` on every use.

    Args:
        package (str): The old home (``__name__`` of the caller).
        names (dict): Moved name -> the module that now holds it.
        modules (Iterable[str]): Old submodules of ``package`` that are
            shims now (they warn when imported): served as attributes, as
            before, when nothing has imported them yet.

    Returns:
        callable: The ``__getattr__``.
    """
    modules = frozenset(modules)

    def __getattr__(name: str):
        if name in names:
            new = names[name]
            _warn(f'{package}.{name}', f'{new}.{name}', stacklevel=2)
            return getattr(importlib.import_module(new), name)
        if name in modules:
            # the shim's warning names the code that asked for the module
            # here, not importlib (whose frames the default filters hide)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                module = importlib.import_module(f'{package}.{name}')
            for warning in caught:
                warnings.warn(warning.message, warning.category, stacklevel=2)
            return module
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__


def warn_moved_module(old: str, new: str) -> None:
    """Called by the shim left at a moved module's old path: warn once (on
    import) on behalf of the code that imported it."""
    # 3: the code that imported the shim (warnings skips importlib's frames)
    _warn(f'the module {old}', new, stacklevel=3)
