"""Helpers shared by the command-line tools.

Bad input ends a tool with one ``error: ...`` line and exit status 1
(:class:`ToolError`): argument values, paths and the launcher environment
are checked before the Runner is built; the user errors the package raises
later (:class:`~mmseg_robust.errors.ConfigError`, a refused checkpoint) are
turned into that line by :func:`user_errors`. The catalogue of messages is
``docs/errors.md``.

Import from here (``from mmseg_robust.cli import X``); the modules are

* :mod:`.errors`: :class:`ToolError` and turning user errors into it;
* :mod:`.config`: loading a config and rewriting it for the recipe
  options;
* :mod:`.checkpoints`: checking, reading and matching checkpoint files;
* :mod:`.launch`: the launcher environment, the output directory, CPU-only
  distributed runs, and how a tool's process ends (:func:`run_tool`);
* :mod:`.arguments`: the options the tools share and ``--eps``;
* :mod:`.sea` and :mod:`.training`: what ``tools/test.py --eval sea`` and
  ``tools/train.py`` add to MMSeg's tools (import them from there; ``.sea``
  imports the MMSeg side).
"""
from mmseg_robust.errors import ConfigError
from .arguments import add_runner_arguments, eps_from_cli, parse_runner_args
from .checkpoints import (checkpoint_file_problem, checkpoint_mismatch,
                          read_checkpoint)
from .config import (  # noqa: F401 (config_from_args: public, as before)
    AMP_ONLY_KEYS, config_from_args, load_config, set_amp, set_crop_size,
    set_data_root, set_test_scale, set_work_dir)
from .errors import (DEBUG_ENV, USER_ERRORS, ToolError, debug_requested,
                     user_errors)
from .launch import (  # noqa: F401 (LAUNCHER_ENV: public, as before)
    LAUNCHER_ENV, check_launcher_env, check_output_dir, run_tool,
    setup_cpu_distributed)

__all__ = [
    'load_config', 'set_work_dir', 'checkpoint_mismatch', 'eps_from_cli',
    'ToolError', 'setup_cpu_distributed', 'set_amp', 'set_crop_size',
    'set_test_scale', 'set_data_root', 'AMP_ONLY_KEYS', 'ConfigError',
    'USER_ERRORS', 'DEBUG_ENV', 'debug_requested', 'user_errors',
    'checkpoint_file_problem', 'read_checkpoint', 'check_output_dir',
    'check_launcher_env', 'add_runner_arguments', 'parse_runner_args',
    'run_tool'
]
