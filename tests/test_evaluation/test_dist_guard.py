"""dist_guard: outcomes and failures cross processes; in one process the
guards are plain calls. The two-process test runs the collectives for real
(gloo on the CPU)."""
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mmseg_robust.cli import ToolError, user_errors
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation import (Outcome, RankConfigError, RankFailure,
                                     fail_together, run_on_main)

REPO = Path(__file__).resolve().parents[2]


class TwoArgError(Exception):
    """Pickles, but does not unpickle (``args`` do not rebuild it)."""

    def __init__(self, what, where):
        super().__init__(f'{what} at {where}')


class TwoArgConfigError(ConfigError):

    def __init__(self, what, where):
        super().__init__(f'{what} at {where}')


def _across(outcome: Outcome) -> Outcome:
    """The outcome as another process receives it."""
    return Outcome.from_bytes(outcome.to_bytes())


def _raise(error):
    raise error


# -- Outcome: what run_on_main broadcasts ----------------------------------
def test_value_round_trips():
    value = {'sea/clean/mIoU': 51.25, 'sea/n_images': 4, 'w': [0.5, 2.0]}
    got = _across(Outcome.capture(lambda: value))
    assert got.ok and got.result() == value


def test_none_round_trips():
    got = _across(Outcome.capture(lambda: None))
    assert got.ok and got.result() is None


@pytest.mark.parametrize('error', [
    ConfigError('the dataset whose labels give the class weights could '
                'not be built'),
    ValueError('bad value'),
    KeyError('classes'),
    ZeroDivisionError('division by zero'),
])
def test_error_round_trips_with_type_and_message(error):
    got = _across(Outcome.capture(_raise, error))
    assert not got.ok
    with pytest.raises(type(error)) as info:
        got.result()
    assert type(info.value) is type(error)
    assert str(info.value) == str(error)


def test_error_that_does_not_unpickle_keeps_type_name_and_message():
    got = _across(Outcome.capture(_raise, TwoArgError('boom', 'batch 2')))
    with pytest.raises(RankFailure) as info:
        got.result()
    assert (info.value.rank, info.value.error_type,
            info.value.message) == (0, 'TwoArgError', 'boom at batch 2')
    assert str(info.value) == 'rank 0 failed: TwoArgError: boom at batch 2'
    # a user error stays a user error
    got = _across(Outcome.capture(_raise, TwoArgConfigError('bad', 'here')))
    with pytest.raises(ConfigError) as info:
        got.result()
    assert isinstance(info.value, RankConfigError)
    assert str(info.value) == 'rank 0 failed: bad at here'


def test_value_that_does_not_pickle_becomes_the_error():
    outcome = Outcome.capture(threading.Lock)
    assert outcome.ok  # here the value is fine ...
    got = _across(outcome)  # ... but it cannot be sent
    with pytest.raises(TypeError, match='pickle'):
        got.result()


def test_capture_keeps_the_exception_object():
    error = ConfigError('x')
    outcome = Outcome.capture(_raise, error)
    with pytest.raises(ConfigError) as info:
        outcome.result()
    assert info.value is error


# -- RankFailure -------------------------------------------------------------
def test_rank_failure_messages_and_pickling():
    err = RankFailure(1, 'RuntimeError', 'CUDA out of memory', 'batch 3')
    assert isinstance(err, RuntimeError) and not isinstance(err, ConfigError)
    assert str(err) == ('rank 1 failed in batch 3: RuntimeError: CUDA out '
                        'of memory')
    err = RankFailure(1, 'OSError', 'disk full', 'batch 0', others=(2, 3))
    assert str(err) == ('rank 1 failed in batch 0 (ranks 2, 3 failed too): '
                        'OSError: disk full')
    user = RankConfigError(
        2, 'ConfigError', 'labels out of range: [7]', 'batch 1', others=(3, ))
    assert isinstance(user, ConfigError) and isinstance(user, RankFailure)
    assert str(user) == ('rank 2 failed in batch 1 (rank 3 failed too): '
                         'labels out of range: [7]')
    for e in (err, user):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e)
        assert (back.rank, back.where, back.others) == (e.rank, e.where,
                                                        e.others)


def test_rank_config_error_is_one_error_line_in_the_tools():
    with pytest.raises(ToolError) as info:
        with user_errors():
            raise RankConfigError(1, 'ConfigError', 'labels out of range',
                                  'batch 1')
    assert str(info.value) == ('error: rank 1 failed in batch 1: labels out '
                               'of range')


# -- one process: plain calls -------------------------------------------------
def test_single_process_run_on_main_is_a_plain_call():
    calls = []
    assert run_on_main(lambda a, b=0: calls.append(1) or a + b, 2, b=3) == 5
    assert calls == [1]
    error = ConfigError('bad weights')
    with pytest.raises(ConfigError) as info:
        run_on_main(_raise, error)
    assert info.value is error  # unchanged, with its traceback


def test_single_process_fail_together_is_transparent():
    done = []
    with fail_together('batch 0'):
        done.append(0)
    assert done == [0]
    error = RuntimeError('boom')
    with pytest.raises(RuntimeError) as info:
        with fail_together('batch 1'):
            raise error
    assert info.value is error
    with pytest.raises(KeyboardInterrupt):
        with fail_together('batch 2'):
            raise KeyboardInterrupt


# -- two processes (gloo) ----------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(out_path: str) -> None:
    """One rank of test_two_processes (started with RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT): runs each case and writes what it saw."""
    import torch
    import torch.distributed as dist
    from mmengine.dist import all_reduce, get_rank
    dist.init_process_group('gloo')
    rank = get_rank()
    seen = {}

    def case(name, fn):
        try:
            seen[name] = ['value', fn()]
        except Exception as err:
            seen[name] = [type(err).__name__, str(err)]

    def fail_on(r, error):
        if rank == r:
            raise error
        return rank

    def steps(fail_at, failing, error):
        for i in range(3):
            with fail_together(f'batch {i}'):
                if i == fail_at and rank in failing:
                    raise error
        return 'all steps'

    case('value', lambda: run_on_main(lambda: {'rank': rank, 'w': [1.5]}))
    case('main_config_error',
         lambda: run_on_main(fail_on, 0, ConfigError('bad weights')))
    case('main_odd_error',
         lambda: run_on_main(fail_on, 0, TwoArgError('boom', 'here')))
    case('main_unpicklable_value', lambda: run_on_main(threading.Lock))
    case('steps_ok', lambda: steps(-1, (), None))
    case('rank1_config_error',
         lambda: steps(1, (1, ), ConfigError('labels out of range: [7]')))
    case('rank1_runtime_error', lambda: steps(2,
                                              (1, ), RuntimeError('injected')))
    case('both_fail', lambda: steps(0, (0, 1), OSError('disk full')))
    # after all that the ranks are still in step: one more collective
    total = torch.tensor([rank + 1])
    all_reduce(total)
    seen['in_step'] = int(total.item())
    dist.destroy_process_group()
    Path(out_path).write_text(json.dumps(seen))


@pytest.mark.slow
def test_two_processes(tmp_path):
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE='2',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=port,
            OMP_NUM_THREADS='1')
        code = ('from tests.test_evaluation.test_dist_guard import _worker; '
                f'_worker({str(tmp_path / f"rank{rank}.json")!r})')
        procs.append(
            subprocess.Popen([sys.executable, '-c', code],
                             cwd=REPO,
                             env=env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE,
                             text=True))
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], errs
    r0, r1 = (
        json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2))
    assert r0['value'] == r1['value'] == ['value', {'rank': 0, 'w': [1.5]}]
    # rank 0's decision fails: the same error on both ranks
    assert r0['main_config_error'] == r1['main_config_error'] == [
        'ConfigError', 'bad weights'
    ]
    assert r0['main_odd_error'] == ['TwoArgError', 'boom at here']
    assert r1['main_odd_error'] == [
        'RankFailure', 'rank 0 failed: TwoArgError: boom at here'
    ]
    assert r0['main_unpicklable_value'][0] == 'TypeError'
    assert r1['main_unpicklable_value'] == r0['main_unpicklable_value']
    assert r0['steps_ok'] == r1['steps_ok'] == ['value', 'all steps']
    # one rank fails in a step: it raises its error, the other names it
    assert r1['rank1_config_error'] == [
        'ConfigError', 'labels out of range: [7]'
    ]
    assert r0['rank1_config_error'] == [
        'RankConfigError', 'rank 1 failed in batch 1: labels out of range: [7]'
    ]
    assert r1['rank1_runtime_error'] == ['RuntimeError', 'injected']
    assert r0['rank1_runtime_error'] == [
        'RankFailure', 'rank 1 failed in batch 2: RuntimeError: injected'
    ]
    assert r0['both_fail'] == r1['both_fail'] == ['OSError', 'disk full']
    assert r0['in_step'] == r1['in_step'] == 3
