"""mmseg_robust: adversarial robustness evaluation (SEA) and adversarial
training for MMSegmentation 1.x.

``import mmseg_robust`` is light: it imports neither torch, MMSeg nor
MMEngine. The attacks (:mod:`mmseg_robust.attacks`) need only torch. As soon
as MMSeg is imported -- or at once, if it already is -- the package applies
the compatibility patches it needs (:mod:`mmseg_robust.compat`) and
registers its modules (``SEATestLoop``, ``SEAMetric``, ``AdvTrainingHook``,
``RobustConvNeXt``, ``RobustPretrained``, ``ScratchAssayDataset``) into
MMSeg's registries, so ``custom_imports=dict(imports=['mmseg_robust'])`` in a
config works as for any plugin (see :mod:`mmseg_robust._plugin`).
"""
import importlib

from . import _plugin
from .version import __version__

_plugin.activate()

register_all_modules = _plugin.register_all_modules

_SUBMODULES = ('attacks', 'compat', 'datasets', 'engine', 'evaluation',
               'models', 'testing', 'cli', 'visualization')

__all__ = [
    '__version__', 'register_all_modules', 'attacks', 'models', 'engine',
    'evaluation', 'datasets', 'compat'
]


def __getattr__(name: str):
    """Submodules on first access (``mmseg_robust.models.X`` after a bare
    ``import mmseg_robust``)."""
    if name in _SUBMODULES:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
