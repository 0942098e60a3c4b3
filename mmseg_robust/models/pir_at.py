"""Deprecated: the PIR-AT converter moved to
:mod:`mmseg_robust.converters.pir_at`; this path goes in the next release."""
from mmseg_robust.converters.pir_at import *  # noqa: F401,F403
from mmseg_robust.converters.pir_at import __all__  # noqa: F401
from mmseg_robust.deprecation import warn_moved_module

warn_moved_module(__name__, 'mmseg_robust.converters.pir_at')
