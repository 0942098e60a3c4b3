"""Weights out of other code bases' checkpoint files: what the robust
ConvNeXt converter (:mod:`.robust_convnext`, also used by the
``RobustPretrained`` initialiser) and the PIR-AT converter (:mod:`.pir_at`)
share."""
from collections import OrderedDict
from typing import Any, Dict, Iterable, Mapping

import torch

__all__ = [
    'CONTAINER_KEYS', 'WRAPPER_PREFIXES', 'find_tensors', 'strip_wrappers',
    'format_keys', 'count_keys'
]

#: Containers that training scripts wrap state dicts in, in order of
#: preference.
CONTAINER_KEYS = ('state_dict', 'model', 'state_dict_ema')
#: Wrapper prefixes (DDP, the robust models' normalisation wrapper,
#: torch.compile), stripped in any order and combination.
WRAPPER_PREFIXES = ('module.', 'base_model.', '_orig_mod.')


def format_keys(keys: Iterable[Any], limit: int = 30) -> str:
    """The first ``limit`` keys, comma-separated, and how many more."""
    keys = list(keys)
    shown = ', '.join(str(k) for k in keys[:limit])
    if len(keys) > limit:
        shown += f', ... ({len(keys) - limit} more)'
    return shown


def count_keys(keys: Iterable[Any], what: str) -> str:
    """``'<n> <what>: <keys>'`` for error messages."""
    keys = list(keys)
    return f'{len(keys)} {what}: {format_keys(keys)}'


def find_tensors(checkpoint: Any) -> Dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (looking into
    :data:`CONTAINER_KEYS`).

    Raises:
        ValueError: No tensors and no known container.
        TypeError: The checkpoint is not a dict.
    """
    obj = checkpoint
    while isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
        inner = next(
            (obj[k]
             for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            if tensors:
                return tensors
            raise ValueError(
                'Unrecognised checkpoint: found no tensors and none of the '
                f'containers {list(CONTAINER_KEYS)}; top-level keys: '
                f'{format_keys(list(obj))}')
        obj = inner
    raise TypeError(f'A checkpoint must be a dict, got {type(obj).__name__}')


def _strip_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped = True
    return key


def strip_wrappers(
        tensors: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, Any]':
    """The same tensors with :data:`WRAPPER_PREFIXES` removed from every
    key (in the original order)."""
    return OrderedDict((_strip_key(k), v) for k, v in tensors.items())
