"""Command-line arguments the tools share: the options of ``tools/train.py``
and ``tools/test.py``, their parsing, and radii typed in units of 1/255.
"""
import argparse
import os
import warnings
from typing import List, Optional, Sequence

from mmengine.config import DictAction

from .errors import ToolError

__all__ = ['eps_from_cli', 'add_runner_arguments', 'parse_runner_args']


def eps_from_cli(values: Sequence[float],
                 allow_tiny: Optional[bool] = None,
                 flag: str = '--allow-tiny-eps') -> List[float]:
    """Radii given on the command line in units of 1/255 -> fractions.

    A radius in (0, 1) looks like a fraction typed by mistake (``--eps 0.03``
    for 8/255 means 0.03/255).

    Args:
        values (Sequence[float]): The radii as typed.
        allow_tiny (bool, optional): ``False``: refuse radii in (0, 1)
            unless the user said so with ``flag``; ``True``: accept them;
            ``None``: accept them with a warning (tools without ``flag``).
        flag (str): The option that allows them, named in the message.

    Returns:
        list: The radii as fractions.

    Raises:
        ToolError: A radius is not in [0, 255], or is in (0, 1) and
            ``allow_tiny`` is ``False``.
    """
    out = []
    for v in values:
        if not v == v or v < 0 or v > 255:  # NaN or out of range
            raise ToolError(
                f'--eps {v:g}: radii are given in units of 1/255 and must be '
                'in [0, 255], e.g. --eps 4 8 12 16')
        out.append(v / 255.0)
    tiny = [v for v in values if 0 < v < 1]
    if tiny and allow_tiny is False:
        v = tiny[0]
        meant = min(max(int(round(v * 255)), 1), 255)
        raise ToolError(
            f'--eps {v:g}: radii are in units of 1/255, so {v:g} means '
            f'{v:g}/255 = {v / 255:.6f}, which looks like a fraction: for '
            f'{meant}/255 (= {meant / 255:.4f}) write --eps {meant}; if you '
            f'do mean {v:g}/255, add {flag}')
    small = [v for v in values if 0 < v < 0.2]
    if small and allow_tiny is None:
        warnings.warn(
            f'--eps {small}: radii are in units of 1/255, so {small[0]} '
            f'means {small[0]}/255 = {small[0] / 255:.5f}. For 8/255 '
            f'(= {8 / 255:.4f}) write --eps 8.',
            stacklevel=2)
    return out


def add_runner_arguments(parser: argparse.ArgumentParser,
                         trust_help: str) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share (as in
    MMSeg's tools): ``--test-scale``, ``--trust-checkpoint``,
    ``--cfg-options``, ``--launcher``, ``--debug``, ``--local_rank``.

    Args:
        parser (ArgumentParser): The tool's parser.
        trust_help (str): What ``--trust-checkpoint`` applies to.
    """
    parser.add_argument(
        '--test-scale',
        nargs=2,
        type=int,
        metavar=('LONG', 'SHORT'),
        help='Resize scale of the validation/test pipelines (MMSeg: 2048 '
        '512)')
    parser.add_argument(
        '--trust-checkpoint',
        action='append',
        default=[],
        metavar='PATH',
        help=f'allow full unpickling of this checkpoint ({trust_help}) if '
        'safe loading refuses it; it can run code stored in the file, so '
        'only for files you trust (repeatable; * = all)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, xxx=yyy format; lists as '
        'key="[a,b]" or key=a,b; no white space')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--debug',
        action='store_true',
        help='show the traceback of user errors too (also '
        'MMSEG_ROBUST_DEBUG=1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(
        parser: argparse.ArgumentParser,
        argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, and export ``LOCAL_RANK`` for MMEngine as MMSeg's tools do."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args
