"""Shared pieces of the bad-input tests of ``tools/test.py`` and
``tools/train.py`` (``test_test_tool_errors.py``,
``test_train_tool_errors.py``, ``test_error_catalogue.py``); their
fixtures are in ``conftest.py``."""
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, List, Tuple, Union

import pytest
from mmengine.config import Config

from mmseg_robust.compat import checkpoint as safe_ckpt
from ..conftest import load_tool

REPO = Path(__file__).resolve().parents[2]
LAUNCHER_VARS = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
                 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST',
                 'OMPI_COMM_WORLD_LOCAL_RANK', 'MMSEG_ROBUST_DEBUG',
                 safe_ckpt.ENV_TRUST)
# quick SEA settings (the tiny model attacks a 32x32 image in well under 1s)
QUICK = ['--eval', 'sea', '--n-iter', '3', '--eps', '4', '--attacks', 'js']
Expected = Union[str, Tuple[str, ...]]


@dataclass
class Case:
    """A bad input: ``argv(c)`` for the tool; ``expected(c)`` the whole
    message, or a tuple whose first item starts it and whose other items
    it contains."""
    id: str
    argv: Callable[[SimpleNamespace], List[str]]
    expected: Callable[[SimpleNamespace], Expected]


def save_config(cfg, path) -> str:
    Config(dict(cfg)).dump(str(path))
    return str(path)


def run_tool(tool: str, argv: List[str]) -> str:
    """The message of the SystemExit ``tool`` ends with."""
    with pytest.raises(SystemExit) as info:
        load_tool(tool)(argv)
    return str(info.value.code)


def check_message(message: str, expected: Expected) -> None:
    assert message.startswith('error: ')
    if isinstance(expected, str):
        assert message == expected
    else:
        assert message.startswith(expected[0]), message
        for part in expected[1:]:
            assert part in message, (part, message)


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
