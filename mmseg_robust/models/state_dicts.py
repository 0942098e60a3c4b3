"""Deprecated: the state-dict helpers moved to
:mod:`mmseg_robust.converters.state_dicts`; this path goes in the next
release."""
from mmseg_robust.converters.state_dicts import *  # noqa: F401,F403
from mmseg_robust.converters.state_dicts import __all__  # noqa: F401
from mmseg_robust.deprecation import warn_moved_module

warn_moved_module(__name__, 'mmseg_robust.converters.state_dicts')
