"""mmseg_robust: adversarial robustness evaluation (SEA) and adversarial
training for MMSegmentation 1.x.

The attacks (:mod:`mmseg_robust.attacks`) need only torch: importing them
imports no OpenMMLab package and changes nothing. The MMSeg side registers
explicitly (:func:`register_all_modules`, :mod:`mmseg_robust._plugin`):
``import mmseg_robust`` does it when MMEngine is already imported, so
``custom_imports=dict(imports=['mmseg_robust'])`` in a config works as for
any OpenMMLab plugin; a script that imports the package first calls
:func:`register_all_modules` before it builds an MMSeg runner. Registering
applies the compatibility patches (:mod:`mmseg_robust.compat`).
"""
import importlib
import importlib.util
import sys

from ._plugin import register_all_modules
from .version import __version__

_SUBMODULES = ('attacks', 'adapter', 'compat', 'converters', 'datasets',
               'engine', 'evaluation', 'metrics_core', 'models', 'testing',
               'training', 'cli', 'visualization')

__all__ = [
    '__version__', 'register_all_modules', 'attacks', 'models', 'training',
    'evaluation', 'datasets', 'compat'
]


def __getattr__(name: str):
    """Submodules on first access (``mmseg_robust.models.X`` after a bare
    ``import mmseg_robust``)."""
    if name in _SUBMODULES:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


if 'mmengine' in sys.modules and importlib.util.find_spec('mmseg'):
    # imported inside an OpenMMLab process with MMSeg (a config's
    # custom_imports, MMSeg's tools): register now, as every plugin does on
    # import
    register_all_modules()
