"""How a command-line tool ends on bad input: one ``error: ...`` line and
exit status 1 (:class:`ToolError`); the user errors the package raises later
(:class:`~mmseg_robust.errors.ConfigError`, a refused checkpoint) are turned
into that line by :func:`user_errors`. The catalogue of messages is
``docs/errors.md``.
"""
import contextlib
import os
from typing import Iterator

from mmseg_robust.compat.checkpoint import UnsafeCheckpointError
from mmseg_robust.errors import ConfigError

__all__ = [
    'ToolError', 'USER_ERRORS', 'DEBUG_ENV', 'debug_requested', 'user_errors'
]

#: Exceptions that are user errors wherever they are raised: printed as one
#: ``error:`` line by :func:`user_errors`, other exceptions keep their
#: traceback.
USER_ERRORS = (ConfigError, UnsafeCheckpointError)

#: Environment variable that shows the traceback of user errors too.
DEBUG_ENV = 'MMSEG_ROBUST_DEBUG'


class ToolError(SystemExit):
    """A user error in a command-line tool: exits with the message."""

    def __init__(self, message: str):
        super().__init__(f'error: {message}')


def debug_requested(flag: bool = False) -> bool:
    """Whether user errors should keep their traceback: ``--debug`` or
    ``MMSEG_ROBUST_DEBUG`` set to anything but ``''`` / ``0``."""
    return bool(flag) or os.environ.get(DEBUG_ENV, '') not in ('', '0')


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn the package's user errors (:data:`USER_ERRORS`) into a
    :class:`ToolError`: one ``error:`` line, exit status 1, no traceback.

    Args:
        debug (bool): Re-raise them unchanged instead (with traceback).

    Raises:
        ToolError: A user error was raised inside the block.
    """
    try:
        yield
    except USER_ERRORS as err:
        if debug:
            raise
        message = str(err)
        if message.startswith('error: '):
            message = message[len('error: '):]
        raise ToolError(message) from None
