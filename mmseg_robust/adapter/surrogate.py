"""The surrogate model of the trust report's transfer check
(``--surrogate CONFIG CKPT``, docs/evaluation.md, "Can I trust this
number?"): another MMSeg segmentor, built from its config and loaded from
its checkpoint the way ``tools/test.py`` loads the evaluated one."""
import os.path as osp
from typing import Union

import torch
import torch.nn as nn

from mmseg_robust.errors import ConfigError

__all__ = ['load_surrogate']


def load_surrogate(config: str,
                   checkpoint: str,
                   device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Build the segmentor of ``config`` and load ``checkpoint`` into it
    (safe loading as for the evaluated model), in eval mode on ``device``.

    Args:
        config (str): An MMSeg config file.
        checkpoint (str): Its weights.
        device: Where the model goes.

    Returns:
        nn.Module: The segmentor.

    Raises:
        ConfigError: The config is missing or its model cannot be built
            here, the checkpoint is missing, unreadable or does not fit
            (each message starts with ``--surrogate:``).
        UnsafeCheckpointError: Safe loading refused the checkpoint.
    """
    from mmengine.config import Config

    from mmseg_robust.cli import checkpoint_mismatch, read_checkpoint
    from mmseg_robust.models.requirements import (MissingRequirementError,
                                                  build_segmentor)
    if not osp.isfile(config):
        raise ConfigError(
            f'--surrogate: config file {config!r} does not exist')
    try:
        ckpt = read_checkpoint(checkpoint)
    except ConfigError as err:
        raise ConfigError(f'--surrogate: {err}') from None
    cfg = Config.fromfile(config)
    try:
        model = build_segmentor(cfg.model, cfg.get('custom_imports'))
    except MissingRequirementError as err:
        raise ConfigError(f'--surrogate: {err}') from None
    problem = checkpoint_mismatch(model, ckpt, name=checkpoint)
    if problem:
        raise ConfigError(f'--surrogate: {problem}')
    state = ckpt.get('state_dict', ckpt)
    model.load_state_dict({
        (k[7:] if k.startswith('module.') else k): v
        for k, v in state.items()
    })
    return model.to(device).eval()
