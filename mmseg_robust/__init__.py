"""mmseg_robust: adversarial robustness evaluation (SEA) and adversarial
training for MMSegmentation 1.x.

``import mmseg_robust`` (or ``custom_imports=dict(imports=['mmseg_robust'])``
in a config) applies the compatibility fixes in :mod:`mmseg_robust.compat`
and registers the package's modules into MMSeg's registries.
"""
from .version import __version__  # noqa: I001
from .compat import install_compat

# must run before anything imports mmseg.models (mmcv-lite support)
install_compat()

from . import attacks  # noqa: E402,F401
from . import datasets, engine, evaluation, models  # noqa: E402,F401

__all__ = ['__version__', 'attacks', 'models', 'engine', 'evaluation',
           'datasets']
