"""Count the operations that make the host wait for the device.

A GPU runs queued work asynchronously; reading a value back (``.item()``,
``bool(t)``, ``.tolist()``) or an operation whose output shape depends on
the data (``nonzero``, boolean-mask indexing, ``masked_select``,
``unique``) stalls the host until the queue drains. The attack loops avoid
them between their few fixed read-back points (docs/attacks.md, "Host
synchronisation"); :class:`HostSyncCounter` counts them on any device, the
CPU included, so that tests can hold the loops to that.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
from collections import Counter
from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['HostSyncCounter']

_aten = torch.ops.aten

#: operators that read device memory on the host or size their output by
#: the data
_SYNC_OPS = {
    _aten._local_scalar_dense,  # .item(), bool(), int(), float()
    _aten.nonzero,
    _aten.masked_select,
    _aten.equal,
    _aten._unique,
    _aten._unique2,
    _aten.unique_dim,
    _aten.unique_consecutive,
    _aten.repeat_interleave,
}

#: indexing operators that sync when an index is a bool mask
_MASK_INDEX_OPS = {_aten.index, _aten.index_put, _aten.index_put_}


def _has_mask_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in (indices or ()))


class HostSyncCounter(TorchDispatchMode):
    """Context manager counting host synchronisations by operator.

    Counts ``aten._local_scalar_dense`` (``.item()``, ``bool``, ``int``),
    ``nonzero``, ``masked_select``, ``equal``, ``unique``, boolean-mask
    ``index`` / ``index_put`` and ``Tensor.tolist()`` calls made inside the
    block (``tolist`` does not pass through the dispatcher and is counted by
    wrapping it for the block's duration).

    Example::

        with HostSyncCounter() as syncs:
            apgd(model, x, y, 8 / 255, 100)
        print(syncs.total, dict(syncs.by_op))
    """

    def __init__(self):
        super().__init__()
        self.by_op: Dict[str, int] = Counter()

    @property
    def total(self) -> int:
        """All synchronising operations counted so far."""
        return sum(self.by_op.values())

    def __enter__(self):
        self._tolist = torch.Tensor.tolist
        counter, tolist = self.by_op, self._tolist

        def counted_tolist(t, *args, **kwargs):
            counter['tolist'] += 1
            return tolist(t, *args, **kwargs)

        torch.Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in _SYNC_OPS or (packet in _MASK_INDEX_OPS
                                   and _has_mask_index(args)):
            self.by_op[packet.__name__] += 1
        return func(*args, **(kwargs or {}))
