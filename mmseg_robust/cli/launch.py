"""Before the Runner is built: the launcher's environment, a writable
output directory, and ``--launcher pytorch`` on machines without GPUs.
"""
import atexit
import logging
import os
import os.path as osp
import sys
import tempfile
from typing import Callable, NoReturn

import torch
from mmengine.config import Config

from .errors import ToolError

__all__ = [
    'LAUNCHER_ENV', 'check_launcher_env', 'check_output_dir',
    'setup_cpu_distributed', 'run_tool'
]

#: Environment variables each launcher reads (set by torchrun, srun, mpirun).
LAUNCHER_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK',
            'OMPI_COMM_WORLD_SIZE'),
}

_LAUNCHER_HOW = {
    'pytorch': 'start the tool with torchrun (tools/dist_train.sh / '
    'tools/dist_test.sh CONFIG ... NUM_PROCESSES do that)',
    'slurm': 'start the tool with srun',
    'mpi': 'start the tool with Open MPI\'s mpirun',
}


def check_launcher_env(launcher: str) -> None:
    """Refuse ``--launcher pytorch|slurm|mpi`` outside the launcher that
    sets its environment (MMEngine would fail with a ``KeyError`` or a
    rendezvous traceback, or wait forever).

    Args:
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.

    Raises:
        ToolError: Variables the launcher needs are not set.
    """
    missing = [
        k for k in LAUNCHER_ENV.get(launcher, ()) if not os.environ.get(k)
    ]
    if missing:
        raise ToolError(
            f'--launcher {launcher} needs the environment its launcher sets, '
            f'but {", ".join(missing)} {"is" if len(missing) == 1 else "are"}'
            f' not set: {_LAUNCHER_HOW[launcher]}; for one process leave '
            'out --launcher')


def check_output_dir(path: str, what: str = '--work-dir') -> None:
    """Make sure ``path`` is (or can be made) a writable directory, before
    any work is done: creates it and writes and removes a probe file.

    Args:
        path (str): The directory.
        what (str): Its name in the message (the option that sets it).

    Raises:
        ToolError: A part of the path is a file, or the directory cannot be
            created or written.
    """
    full = osp.abspath(osp.expanduser(path))
    probe = full
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if osp.exists(probe) and not osp.isdir(probe):
        where = 'is a file' if probe == full else \
            f'cannot be created: {probe} is a file'
        raise ToolError(f'{what} {path}: {where}, not a directory')
    try:
        os.makedirs(full, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=full, prefix='.write_test_')
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise ToolError(f'{what} {path}: cannot create or write this '
                        f'directory ({err.strerror or err})') from None


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without GPUs.

    MMEngine's PyTorch launcher calls ``torch.cuda.set_device(LOCAL_RANK)``
    and wraps the model with ``device_ids=[LOCAL_RANK]``; both need one GPU
    per process. On a machine without CUDA we start the gloo process group
    ourselves (MMEngine then skips its own initialisation) and wrap the
    model without device ids.

    Raises:
        ToolError: CUDA is available but with fewer GPUs than processes per
            node (``LOCAL_WORLD_SIZE``): MMEngine would fail in
            ``cuda.set_device``. The message says how to run instead.
    """
    if launcher != 'pytorch':
        return
    if torch.cuda.is_available():
        per_node = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
        gpus = torch.cuda.device_count()
        if gpus < per_node:
            raise ToolError(
                f'{per_node} processes per node but only {gpus} GPU(s) '
                'visible: MMEngine puts each process on its own GPU. Start '
                f'at most {gpus} processes, or run on the CPU (gloo) with '
                'CUDA_VISIBLE_DEVICES= (empty)')
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper


def _distributed() -> bool:
    """Whether this process has a torch.distributed process group."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def _exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives, printing a message code
    (a :class:`ToolError`'s ``error: ...`` line) to stderr as it does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_tool(main: Callable[[], object]) -> NoReturn:
    """Run a tool's ``main`` and end the process with its exit status.

    Without a process group this is ``main()`` followed by a normal exit.
    After a distributed run the process ends with ``os._exit`` once its
    ``atexit`` handlers have run and its output and logs are flushed,
    skipping the rest of the interpreter's shutdown: a
    process that ran gloo collectives can otherwise abort there
    ("terminate called without an active exception", status -6). A gloo
    worker thread releases the tensors of its last work and needs the GIL
    for that, Python 3.11 ends such a thread while it shuts down, and a C++
    thread cannot end that way. Measured with plain torch 2.14 (two
    processes, one all-reduce, rank 0 exiting first): 3 of 15 runs aborted
    (docs/evaluation.md, "Distributed").

    Args:
        main (Callable[[], object]): The tool's entry point; its return
            value is ignored.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exit_:
        code = exit_.code
    except BaseException as err:
        if not _distributed():
            raise
        # torch's hook prefixes each line with the rank
        sys.excepthook(type(err), err, err.__traceback__)
        # 130: the shell's status for Ctrl-C
        code = 130 if isinstance(err, KeyboardInterrupt) else 1
    if not _distributed():
        sys.exit(code)
    status = _exit_status(code)
    # what the interpreter's shutdown would do before the point where it
    # aborts: the atexit handlers (loggers' uploads, compile workers,
    # temporary files), then flushing the streams and log handlers
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # closed or replaced: nothing left to write
    logging.shutdown()
    # as the OS reads a status: its low 8 bits (os._exit refuses larger)
    os._exit(status & 0xFF)
