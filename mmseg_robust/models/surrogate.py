"""Deprecated: the surrogate loader moved to
:mod:`mmseg_robust.adapter.surrogate`; this path goes in the next
release."""
from mmseg_robust.adapter.surrogate import *  # noqa: F401,F403
from mmseg_robust.adapter.surrogate import __all__  # noqa: F401
from mmseg_robust.deprecation import warn_moved_module

warn_moved_module(__name__, 'mmseg_robust.adapter.surrogate')
