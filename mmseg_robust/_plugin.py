"""Explicit registration of mmseg_robust's MMSeg side.

:func:`register_all_modules` applies the compatibility patches
(:func:`mmseg_robust.compat.apply_compat`) and imports the subpackages that
register modules into MMSeg's and MMEngine's registries (``SEATestLoop``,
``SEAMetric``, ``AdvTrainingHook``, ``RobustConvNeXt``, ``RobustPretrained``,
``ScratchAssayDataset`` ...). It runs, explicitly:

* when ``mmseg_robust`` is imported in a process that already imported
  MMEngine -- ``custom_imports=dict(imports=['mmseg_robust'])`` in a config,
  or ``import mmseg_robust`` in a script after MMSeg/MMEngine -- as any
  OpenMMLab plugin registers by being imported;
* at the end of each of its MMSeg-side subpackages (``training``,
  ``evaluation``, ``datasets``, ``models``), so importing one of them
  registers all;
* from the package's own tools, and from user code that calls it.

Nothing waits for imports: a script that imports ``mmseg_robust`` before
anything of OpenMMLab (the attacks need only torch) and later builds an MMSeg
runner calls :func:`mmseg_robust.register_all_modules` first, as MMSeg's own
scripts call ``mmseg.utils.register_all_modules()``.
"""
import importlib
import sys
from typing import Optional

__all__ = ['register_all_modules', 'registered', 'MMSEG_SIDE']

#: Subpackages that register modules into MMSeg/MMEngine registries, in an
#: order where each one's imports of the others are complete.
MMSEG_SIDE = ('mmseg_robust.evaluation', 'mmseg_robust.datasets',
              'mmseg_robust.models', 'mmseg_robust.training')

_state = 'idle'  # -> 'registering' -> 'done'


def registered() -> bool:
    """Whether the MMSeg-side modules are registered."""
    return _state == 'done'


def initializing(name: str) -> bool:
    """Whether module ``name`` is being imported right now (its code has
    started and not finished)."""
    module = sys.modules.get(name)
    spec = getattr(module, '__spec__', None)
    return bool(getattr(spec, '_initializing', False))


def register_all_modules(caller: Optional[str] = None) -> None:
    """Apply the compatibility patches and register every mmseg_robust
    module into MMSeg's registries (once; later calls return at once).

    Args:
        caller (str, optional): The MMSeg-side subpackage calling at the end
            of its own import. While another one is still being imported
            (it imported the caller), registration waits for that one's
            call, so no subpackage sees a half-imported sibling.
    """
    global _state
    if _state != 'idle':
        return
    if any(initializing(name) for name in MMSEG_SIDE if name != caller):
        return
    _state = 'registering'
    try:
        from .compat import apply_compat

        # before MMSeg is imported: mmcv-lite needs the mmcv.ops fallback
        apply_compat()
        for name in MMSEG_SIDE:
            importlib.import_module(name)
    except BaseException:
        _state = 'idle'
        raise
    _state = 'done'
