"""Deprecated: the test loop moved to :mod:`mmseg_robust.evaluation` and the
adversarial-training hook and schedules to :mod:`mmseg_robust.training`
(one home per role); the old names here work until the next release, with a
``DeprecationWarning``."""
from mmseg_robust.deprecation import moved_names

__all__ = []

_EVALUATION = 'mmseg_robust.evaluation'
__getattr__ = moved_names(
    __name__, {
        'SEATestLoop': _EVALUATION,
        'DEFAULT_EPS': _EVALUATION,
        'AdvTrainingHook': 'mmseg_robust.training',
    },
    modules=('runner', 'hooks', 'schedules'))
