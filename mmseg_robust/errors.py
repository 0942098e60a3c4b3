"""The exception the package raises for bad input.

:class:`ConfigError` marks a *user* error: a setting, a file or data that
the package refuses and that the user can fix (a radius out of range, an
empty test set, labels outside the classes, results made with other
settings...). ``tools/test.py`` and ``tools/train.py`` print it as one
``error: ...`` line and exit with status 1; every other exception keeps its
traceback, since it is a bug. ``--debug`` (or ``MMSEG_ROBUST_DEBUG=1``)
shows the traceback of user errors too.

The module imports nothing, so any part of the package can use it.
"""

__all__ = ['ConfigError']


class ConfigError(ValueError):
    """A setting, file or data the package refuses; the message says what
    to change.

    A :class:`ValueError`, so code that caught the ``ValueError`` raised
    before keeps working.
    """
