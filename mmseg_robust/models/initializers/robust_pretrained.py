"""The MMEngine initialiser that loads a ConvNeXt checkpoint of any common
layout (timm, the robust ConvNeXts' ConvStem, the original ConvNeXt,
mmpretrain) into a backbone: :class:`RobustPretrained`. The renaming is
:func:`~mmseg_robust.converters.convert_robust_convnext` (its module
documents the key mapping); this initialiser fails loudly instead of
silently leaving weights random.
"""
import re
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner import CheckpointLoader

from mmseg_robust.converters.robust_convnext import convert_robust_convnext
from mmseg_robust.converters.state_dicts import count_keys, format_keys
from mmseg_robust.deprecation import moved_names

__all__ = ['RobustPretrained']

# per-stage output norms: not part of a classification checkpoint (except
# norm3, the final norm), built by mmpretrain for each entry of out_indices
_OUTPUT_NORM_KEY = re.compile(r'^norm\d+\.')


def _match_pointwise(value: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    """Reshape 1x1-conv pointwise weights to Linear ones and vice versa."""
    if value.shape == target.shape or value.numel() != target.numel():
        return value
    if value.dim() == 4 and target.dim() == 2 and value.shape[2:] == (1, 1):
        return value.flatten(1)
    if value.dim() == 2 and target.dim() == 4 and target.shape[2:] == (1, 1):
        return value[:, :, None, None]
    return value


@WEIGHT_INITIALIZERS.register_module()
class RobustPretrained:
    """Initialise a ConvNeXt backbone from a checkpoint of any common layout.

    Use it as the backbone's ``init_cfg``::

        backbone=dict(
            type='RobustConvNeXt', stem='conv', out_indices=[0, 1, 2, 3],
            gap_before_final_norm=False,
            init_cfg=dict(type='RobustPretrained', checkpoint=PATH))

    The checkpoint is read with MMEngine's checkpoint loader (local files,
    URLs, ...; with mmseg_robust's safe-loading patch) and renamed with
    :func:`convert_robust_convnext`. Unlike ``Pretrained`` it is strict:
    every backbone weight must come from the checkpoint, except the
    per-stage output norms ``norm{i}`` that a classification checkpoint does
    not have (logged as newly initialised); the checkpoint's stem must match
    the model's ``stem``; shapes must agree. Output norms the model did not
    build (stages not in ``out_indices``) and the classifier head are
    ignored and logged.

    :class:`~mmseg_robust.models.RobustConvNeXt` runs this initialiser after
    all others; on other modules it runs in ``init_cfg`` order before the
    children's ``init_weights``, as every non-``Pretrained`` initialiser.

    Args:
        checkpoint (str): Path or URL of the checkpoint.
        prefix (str, optional): Sub-module prefix to select from the
            checkpoint (see :func:`convert_robust_convnext`).
            Defaults to None.
        map_location (str): ``map_location`` of the load. Defaults to 'cpu'.

    Raises:
        FileNotFoundError: If a local checkpoint does not exist.
        ValueError: If the checkpoint layout is not recognised.
        RuntimeError: If backbone weights would stay uninitialised, the
            checkpoint has weights the backbone lacks, the stems differ or
            shapes mismatch.
    """

    def __init__(self,
                 checkpoint: str,
                 prefix: Optional[str] = None,
                 map_location: str = 'cpu') -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.map_location = map_location

    def __call__(self, module: nn.Module) -> None:
        """Load the checkpoint into ``module``."""
        name = type(module).__name__
        try:
            ckpt = CheckpointLoader.load_checkpoint(
                self.checkpoint, map_location=self.map_location)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f'RobustPretrained: checkpoint {self.checkpoint!r} does not '
                f'exist ({err})') from err
        conv = convert_robust_convnext(
            ckpt, prefix=self.prefix, return_info=True)

        model_stem = getattr(module, 'stem_type', 'patch')
        if conv.stem != model_stem:
            raise RuntimeError(
                f'RobustPretrained: {self.checkpoint} has a {conv.stem} stem '
                f'but {name} was built with stem={model_stem!r}; build '
                f"RobustConvNeXt with stem='{conv.stem}'")

        target = module.state_dict()
        to_load: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
        mismatched, unexpected, unused_norms = [], [], []
        for key, value in conv.state_dict.items():
            if key not in target:
                if _OUTPUT_NORM_KEY.match(key):
                    unused_norms.append(key)
                else:
                    unexpected.append(key)
                continue
            value = _match_pointwise(value, target[key])
            if value.shape != target[key].shape:
                mismatched.append(f'{key}: checkpoint {tuple(value.shape)} '
                                  f'vs model {tuple(target[key].shape)}')
                continue
            to_load[key] = value
        missing = [k for k in target if k not in conv.state_dict]
        new_norms = [k for k in missing if _OUTPUT_NORM_KEY.match(k)]
        missing = [k for k in missing if not _OUTPUT_NORM_KEY.match(k)]

        problems = []
        if missing:
            problems.append(
                count_keys(missing,
                           f'weights of {name} are not in the checkpoint'))
        if mismatched:
            problems.append(count_keys(mismatched, 'shapes differ'))
        if unexpected:
            problems.append(
                count_keys(
                    unexpected, 'checkpoint weights have no place in '
                    f'{name} (a different depth?)'))
        if problems:
            raise RuntimeError(
                f'RobustPretrained: {self.checkpoint} ({conv.layout} layout, '
                f'{conv.stem} stem) does not fit {name}:\n  - ' +
                '\n  - '.join(problems))

        module.load_state_dict(to_load, strict=False)

        ignored = conv.ignored + unused_norms
        print_log(
            f'RobustPretrained: loaded {len(to_load)} tensors into {name} '
            f'from {self.checkpoint} ({conv.layout} layout, {conv.stem} '
            f'stem); newly initialised (per-stage output norms, not in the '
            f'checkpoint): {format_keys(new_norms) or "none"}; ignored '
            f'{len(ignored)} checkpoint keys: {format_keys(ignored) or "-"}',
            logger='current')
        if hasattr(module, '_params_init_info'):
            update_init_info(
                module,
                init_info=f'RobustPretrained: load from {self.checkpoint}')


# moved to mmseg_robust.converters (ConvNeXtConversion); deprecated here
__getattr__ = moved_names(__name__,
                          {'ConvNeXtConversion': 'mmseg_robust.converters'})
