"""When the MMSeg side of mmseg_robust is loaded, and how.

``import mmseg_robust`` imports neither MMSeg nor MMEngine (the attacks are
plain PyTorch). It calls :func:`activate`, which

1. arranges for the compatibility patches (:mod:`mmseg_robust.compat`) to be
   applied when the library each one patches is imported, and
2. arranges for :func:`register_all_modules` to run right after ``mmseg`` is
   imported -- or at once, if it already is.

So every way of using the package with MMSeg registers its modules before
MMSeg builds anything: ``custom_imports=dict(imports=['mmseg_robust'])``
(MMSeg is imported before or after the config is read), ``import
mmseg_robust`` in a script, or importing one of the MMSeg-side subpackages
(``models``, ``engine``, ``evaluation``, ``datasets``).

Registration imports those four subpackages. If ``mmseg`` is first imported
by one of them (partly initialised at that moment), registration waits until
that subpackage has finished, so no subpackage sees a half-imported sibling.
"""
import importlib
import sys

from . import _import_hooks

__all__ = ['activate', 'register_all_modules', 'registered', 'MMSEG_SIDE']

#: Subpackages that register modules into MMSeg/MMEngine registries, in an
#: order where each one's imports of the others are complete.
MMSEG_SIDE = ('mmseg_robust.evaluation', 'mmseg_robust.datasets',
              'mmseg_robust.models', 'mmseg_robust.engine')

_state = 'idle'  # -> 'registering' -> 'done'
_activated = False


def registered() -> bool:
    """Whether the MMSeg-side modules are registered."""
    return _state == 'done'


def _after_import() -> None:
    if 'mmseg' in sys.modules:
        _register()


def _register() -> None:
    global _state
    if _state != 'idle':
        return
    if any(_import_hooks.executing(name) for name in MMSEG_SIDE):
        return  # the subpackage's own hook calls again when it has finished
    _state = 'registering'
    try:
        for name in MMSEG_SIDE:
            importlib.import_module(name)
    except BaseException:
        _state = 'idle'
        raise
    _state = 'done'


def register_all_modules() -> None:
    """Import MMSeg and register every mmseg_robust module into its
    registries now (``import mmseg_robust`` does this by itself as soon as
    MMSeg is imported; this is for code that wants it explicit)."""
    activate()
    importlib.import_module('mmseg')
    _register()


def activate() -> None:
    """Install the compatibility patches and the registration trigger
    (once; called by ``import mmseg_robust``)."""
    global _activated
    if _activated:
        return
    _activated = True
    from .compat import install_compat
    install_compat()
    for name in MMSEG_SIDE:
        if name not in sys.modules:
            _import_hooks.when_imported(name, _after_import)
    # after the compat patches: the mmcv.ops fallback must be in place
    # before registration imports mmseg.models
    _import_hooks.when_imported('mmseg', _register)
