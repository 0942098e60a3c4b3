"""Deprecated: the test loop moved to :mod:`mmseg_robust.evaluation` and the
adversarial-training hook and schedules to :mod:`mmseg_robust.training`
(one home per role); the old names here work until the next release, with a
``DeprecationWarning``.

Importing this package still registers the plugin's modules, as it did.
"""
from mmseg_robust import register_all_modules
from mmseg_robust.deprecation import moved_names, warn_moved_module

__all__ = []

warn_moved_module(__name__,
                  'mmseg_robust.evaluation and mmseg_robust.training')

_EVALUATION = 'mmseg_robust.evaluation'
__getattr__ = moved_names(
    __name__, {
        'SEATestLoop': _EVALUATION,
        'DEFAULT_EPS': _EVALUATION,
        'AdvTrainingHook': 'mmseg_robust.training',
    },
    modules=('runner', 'hooks', 'schedules'))

# as before the move: importing the package registers all of the MMSeg side
register_all_modules()
