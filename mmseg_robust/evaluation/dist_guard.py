"""Distributed runs that fail together instead of hanging.

In a distributed run every rank must enter the same collectives in the
same order. An exception on one rank breaks that: the other ranks wait in
their next collective for a rank that has gone (forever with NCCL, until the
peer's sockets close with gloo, and with an error that does not say why).
Two patterns cover the evaluation (docs/evaluation.md, "Distributed"):

* **A decision on rank 0, shared by broadcast** (class weights, the
  metrics, ``summary.json``): :func:`run_on_main` broadcasts the outcome
  (:class:`Outcome`), the value or the exception, so that every rank
  returns the value or raises the same error (type and message kept: a
  :class:`~mmseg_robust.errors.ConfigError` stays one, and the tools print
  it as one ``error:`` line on every rank).
* **Work on every rank** (a batch): :func:`fail_together` exchanges a
  failure flag among the ranks after each step (one ``all_reduce`` of one
  number). When a rank fails, every rank stops after that step: the failing
  rank raises its own exception, the others :class:`RankFailure` (or
  :class:`RankConfigError` for a user error), which names the failing rank
  and its message.

Collectives go through :mod:`mmengine.dist`; in a single process both are
plain calls (no collective, exceptions unchanged).
"""
import pickle
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import torch
from mmengine.dist import (all_gather_object, all_reduce,
                           broadcast_object_list, get_dist_info)

from mmseg_robust.errors import ConfigError

__all__ = [
    'Outcome', 'run_on_main', 'fail_together', 'RankFailure', 'RankConfigError'
]

T = TypeVar('T')


class RankFailure(RuntimeError):
    """Raised on the ranks that did not fail when another rank failed.

    Args:
        rank (int): The (first) rank that failed.
        error_type (str): The class name of its exception.
        message (str): Its message.
        where (str): The step it failed in (e.g. ``'batch 3'``).
        others (Sequence[int]): Further ranks that failed in the same step.

    Attributes:
        rank, error_type, message, where, others: As given.
    """

    def __init__(self,
                 rank: int,
                 error_type: str,
                 message: str,
                 where: str = '',
                 others: Tuple[int, ...] = ()) -> None:
        self.rank = int(rank)
        self.error_type = error_type
        self.message = message
        self.where = where
        self.others = tuple(int(r) for r in others)
        super().__init__(self._text())

    def _text(self) -> str:
        at = f' in {self.where}' if self.where else ''
        what = self.message if isinstance(self, ConfigError) else \
            f'{self.error_type}: {self.message}'
        also = ''
        if self.others:
            also = (f' (rank{"s" if len(self.others) > 1 else ""} '
                    f'{", ".join(map(str, self.others))} failed too)')
        return f'rank {self.rank} failed{at}{also}: {what}'

    def __reduce__(self):
        return (type(self), (self.rank, self.error_type, self.message,
                             self.where, self.others))


class RankConfigError(RankFailure, ConfigError):
    """:class:`RankFailure` for a user error (a
    :class:`~mmseg_robust.errors.ConfigError`) on another rank: a
    ``ConfigError`` itself, so the tools print it as one ``error:`` line
    (``error: rank 1 failed in batch 3: labels out of range: ...``)."""


def _describe(error: BaseException) -> Tuple[str, str, bool]:
    """What the other ranks learn of an exception: its type name, its
    message and whether it is a user error."""
    if isinstance(error, RankFailure):  # already a report of another rank
        return error.error_type, error.message, isinstance(error, ConfigError)
    return type(error).__name__, str(error), isinstance(error, ConfigError)


def _failure(rank: int,
             described: Tuple[str, str, bool],
             where: str = '',
             others: Tuple[int, ...] = ()) -> RankFailure:
    """The exception the other ranks raise for an exception on ``rank``:
    :class:`RankConfigError` for a user error, else :class:`RankFailure`."""
    name, message, user = described
    cls = RankConfigError if user else RankFailure
    return cls(rank, name, message, where, others)


class Outcome:
    """What a call gave, its value or its exception, in a form that can be
    pickled and sent to other processes.

    Use :meth:`capture` to make one and :meth:`result` to get the value
    back (or raise the exception). Pickled (:meth:`to_bytes`), an
    exception keeps its type and message where the exception object itself
    pickles and unpickles to the same type and message (built-in
    exceptions, :class:`ConfigError`, any exception whose ``args`` rebuild
    it); otherwise it becomes :class:`RankFailure` (or
    :class:`RankConfigError`) with its type name and message. A value that
    cannot be pickled makes the outcome its pickling error.

    Args:
        value: The value (when ``error`` is ``None``).
        error (BaseException, optional): The exception.
        rank (int): The rank it came from (named by :class:`RankFailure`).
    """

    def __init__(self,
                 value: Any = None,
                 error: Optional[BaseException] = None,
                 rank: int = 0) -> None:
        self.value = value
        self.error = error
        self.rank = rank

    @classmethod
    def capture(cls, fn: Callable[..., Any], *args, **kwargs) -> 'Outcome':
        """Call ``fn(*args, **kwargs)`` and keep its value or the
        :class:`Exception` it raised."""
        try:
            return cls(fn(*args, **kwargs), rank=get_dist_info()[0])
        except Exception as err:
            return cls(error=err, rank=get_dist_info()[0])

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> Any:
        """The value, or raise the exception (with the traceback it has)."""
        if self.error is not None:
            raise self.error
        return self.value

    def to_bytes(self) -> bytes:
        """The outcome pickled. The value is pickled here, so that a value
        that cannot be pickled turns into an error outcome on the sending
        side instead of failing inside a collective."""
        if self.error is None:
            try:
                return pickle.dumps(('value', pickle.dumps(self.value)))
            except Exception as err:
                error: BaseException = err
        else:
            error = self.error
        return pickle.dumps(('error', _portable(error, self.rank)))

    @classmethod
    def from_bytes(cls, data: bytes, rank: int = 0) -> 'Outcome':
        """The outcome :meth:`to_bytes` made (``rank``: where it came
        from)."""
        kind, payload = pickle.loads(data)
        if kind == 'value':
            return cls(pickle.loads(payload), rank=rank)
        return cls(error=payload, rank=rank)


def _portable(error: BaseException, rank: int) -> BaseException:
    """``error`` if it survives pickling with its type and message, else a
    :class:`RankFailure` carrying both."""
    try:
        back = pickle.loads(pickle.dumps(error))
        if type(back) is type(error) and str(back) == str(error):
            return back
    except Exception:
        pass
    if isinstance(error, RankFailure):
        return _failure(error.rank, _describe(error), error.where,
                        error.others)
    return _failure(rank, _describe(error))


def _note(error: BaseException, text: str) -> None:
    if hasattr(error, 'add_note'):  # Python >= 3.11
        error.add_note(text)


def run_on_main(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn(*args, **kwargs)`` on rank 0 only and return its value on
    every rank; if it raises, every rank raises.

    Rank 0 re-raises its own exception (with its traceback); the other
    ranks raise an exception of the same type with the same message (see
    :class:`Outcome` for exceptions that cannot be pickled). In a single
    process this is ``fn(*args, **kwargs)``. A collective: every rank must
    call it (the other ranks' ``args`` are not used).

    Returns:
        The value ``fn`` returned on rank 0 (rank 0 gets the object itself,
        the others an unpickled copy).
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return fn(*args, **kwargs)
    box: List[Optional[bytes]] = [None]
    outcome = None
    if rank == 0:
        outcome = Outcome.capture(fn, *args, **kwargs)
        box = [outcome.to_bytes()]
    broadcast_object_list(box, src=0)
    shared = Outcome.from_bytes(box[0], rank=0)
    if outcome is not None:
        if outcome.ok and not shared.ok:
            raise shared.error  # the value could not be pickled
        return outcome.result()  # its own value or exception
    if not shared.ok:
        _note(
            shared.error, 'raised on rank 0 and shared with every rank '
            '(rank 0 shows its traceback)')
    return shared.result()


class fail_together:
    """Context manager around one step of work done on every rank: after
    the step the ranks exchange whether it failed, and if any rank failed,
    every rank raises.

    The rank that failed raises its own exception, unchanged; the others
    raise :class:`RankFailure` (:class:`RankConfigError` for a
    :class:`ConfigError`), naming the first failing rank, its message and
    the step. A collective: every rank must
    run the same steps (one ``all_reduce`` of one number per step, and an
    ``all_gather_object`` of the messages when a rank failed). In a single
    process it does nothing. Only :class:`Exception` is exchanged: a
    ``KeyboardInterrupt`` leaves at once.

    Args:
        where (str): The step, for the message (e.g. ``'batch 3'``).

    Example:
        >>> for idx in range(len(dataloader)):  # equal on every rank
        ...     with fail_together(f'batch {idx}'):
        ...         process(next(batches))
    """

    def __init__(self, where: str = '') -> None:
        self.where = where

    def __enter__(self) -> 'fail_together':
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and not isinstance(exc, Exception):
            return False
        rank, world_size = get_dist_info()
        if world_size == 1:
            return False
        flag = torch.tensor([0 if exc is None else 1], dtype=torch.int64)
        all_reduce(flag)
        if int(flag.item()) == 0:
            return False
        info = None if exc is None else (rank, _describe(exc))
        failed = [i for i in all_gather_object(info) if i is not None]
        if exc is not None:
            return False  # this rank raises its own exception
        (first, described), others = failed[0], [r for r, _ in failed[1:]]
        raise _failure(first, described, self.where, tuple(others)) from None
