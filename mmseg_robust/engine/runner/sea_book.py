"""Deprecated: moved to
:mod:`mmseg_robust.evaluation.loops.sea_book`;
this path goes in the next release."""
from mmseg_robust.deprecation import warn_moved_module
from mmseg_robust.evaluation.loops.sea_book import *  # noqa: F401,F403
from mmseg_robust.evaluation.loops.sea_book import __all__  # noqa: F401

warn_moved_module(__name__, 'mmseg_robust.evaluation.loops.sea_book')
