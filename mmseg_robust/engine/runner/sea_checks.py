"""Deprecated: moved to
:mod:`mmseg_robust.evaluation.loops.sea_checks`;
this path goes in the next release."""
from mmseg_robust.deprecation import warn_moved_module
from mmseg_robust.evaluation.loops.sea_checks import *  # noqa: F401,F403
from mmseg_robust.evaluation.loops.sea_checks import __all__  # noqa: F401

warn_moved_module(__name__, 'mmseg_robust.evaluation.loops.sea_checks')
