"""ConvNeXt with an optional convolutional stem, for robust initialisation.

The adversarially trained ImageNet ConvNeXts of Singh, Croce and Hein (2023)
replace ConvNeXt's 4x4 patch stem by a small convolutional stem ("ConvStem",
docs/training.md). :class:`RobustConvNeXt` is mmpretrain's ``ConvNeXt`` with
that stem as an option, so that a segmentation config only swaps
``type='mmpretrain.ConvNeXt'`` for ``type='RobustConvNeXt'`` (+ ``stem=``).
Its weights are loaded with the ``RobustPretrained`` initialiser
(:mod:`mmseg_robust.models.initializers`).
"""
from typing import Dict, List, Optional, Sequence, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import initialize
from mmpretrain.models.backbones import ConvNeXt
from mmpretrain.models.utils import build_norm_layer
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import MODELS

# mmpretrain.ConvNeXt's own default initialisation (BaseModule deep-copies it)
_DEFAULT_INIT_CFG = [
    dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02, bias=0.),
    dict(type='Constant', layer=['LayerNorm'], val=1., bias=0.),
]

# initialisers that load weights: run after every other one (see init_weights)
_LOADING_INITS = ('RobustPretrained', 'Pretrained')


class ConvStem(nn.Sequential):
    """Convolutional stem of the robust ConvNeXts (overall stride 4).

    Conv3x3/s2 (``in_channels -> out_channels // 2``), LayerNorm, activation,
    Conv3x3/s2 (``out_channels // 2 -> out_channels``), LayerNorm,
    activation. Both convolutions have a bias and padding 1; both norms
    normalise over channels. Children are indexed ``0..5`` (the checkpoint
    keys ``stem.stem.0/1/3/4`` map onto ``0/1/3/4``).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (the width of stage 0).
        norm_cfg (dict): Norm layer config (mmpretrain registry).
        act_cfg (dict): Activation config (mmpretrain registry).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict,
                 act_cfg: dict) -> None:
        mid_channels = out_channels // 2
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, mid_channels),
            MMPRETRAIN_MODELS.build(act_cfg),
            nn.Conv2d(mid_channels, out_channels, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, out_channels),
            MMPRETRAIN_MODELS.build(act_cfg),
        )


def _init_type_name(cfg: dict) -> str:
    """The initialiser's name of an init_cfg entry, without a scope
    ('mmengine.RobustPretrained' -> 'RobustPretrained')."""
    kind = cfg.get('type')
    if isinstance(kind, str):
        return kind.split('.')[-1]
    return getattr(kind, '__name__', '')


def _is_loading_init(cfg: dict) -> bool:
    """Whether an init_cfg entry loads a checkpoint."""
    kind = cfg.get('type')
    if isinstance(kind, str):
        # accept scoped names such as 'mmengine.RobustPretrained'
        return _init_type_name(cfg) in _LOADING_INITS
    return _init_type_name(cfg) in ('RobustPretrained', 'PretrainedInit')


@MODELS.register_module()
class RobustConvNeXt(ConvNeXt):
    """mmpretrain's ConvNeXt with a choice of stem.

    Everything but ``stem`` is :class:`mmpretrain.models.ConvNeXt`: same
    arguments, parameter names (``downsample_layers``, ``stages``,
    ``norm{i}``), outputs (one tensor per entry of ``out_indices``, each
    passed through its own LayerNorm ``norm{i}``) and layer-wise depths for
    layer-decay optimisers. The stem is ``downsample_layers[0]``.

    With ``stem='conv'`` and inputs whose height and width are multiples of
    4, the outputs have the same shapes as with ``stem='patch'``.

    Args:
        arch (str | dict): ConvNeXt architecture name (``'tiny'``,
            ``'small'``, ...) or a dict with ``depths`` and ``channels``.
            Defaults to ``'tiny'``.
        in_channels (int): Input channels. Defaults to 3.
        stem (str): ``'patch'``: mmpretrain's stock stem (Conv
            ``stem_patch_size`` x ``stem_patch_size`` with the same stride,
            then LayerNorm). ``'conv'``: :class:`ConvStem` (two Conv3x3/s2,
            each followed by LayerNorm and activation), as in the robust
            ConvNeXt-T/S "CvSt" checkpoints. Defaults to ``'patch'``.
        stem_patch_size (int): Patch size of the patch stem; must be 4 for
            the conv stem. Defaults to 4.
        norm_cfg (dict): Norm layers (also the stem's). Defaults to
            ``dict(type='LN2d', eps=1e-6)``.
        act_cfg (dict): Activation of the blocks and of the conv stem.
            Defaults to ``dict(type='GELU')``.
        linear_pw_conv (bool): Pointwise convolutions as ``nn.Linear``.
            Defaults to True.
        use_grn (bool): Global Response Normalisation (ConvNeXt V2).
            Defaults to False.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Layer-scale init value.
            Defaults to 1e-6.
        out_indices (Sequence[int] | int): Stages to output. Defaults to -1.
        frozen_stages (int): Number of frozen stages (the stem freezes with
            stage 0). Defaults to 0.
        gap_before_final_norm (bool): Globally average-pool before the
            output norms (classification). Use False for segmentation.
            Defaults to True.
        with_cp (bool): Gradient checkpointing. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation; e.g.
            ``dict(type='RobustPretrained', checkpoint=PATH)``. Checkpoint
            loaders (``RobustPretrained``, ``Pretrained``) always run last,
            after the other entries and the submodules' ``init_weights``,
            whatever their position in the list. Defaults to mmpretrain's
            truncated-normal / constant initialisation.
    """

    def __init__(
        self,
        arch: Union[str, Dict[str, List[int]]] = 'tiny',
        in_channels: int = 3,
        stem: str = 'patch',
        stem_patch_size: int = 4,
        norm_cfg: dict = dict(type='LN2d', eps=1e-6),
        act_cfg: dict = dict(type='GELU'),
        linear_pw_conv: bool = True,
        use_grn: bool = False,
        drop_path_rate: float = 0.,
        layer_scale_init_value: float = 1e-6,
        out_indices: Union[Sequence[int], int] = -1,
        frozen_stages: int = 0,
        gap_before_final_norm: bool = True,
        with_cp: bool = False,
        init_cfg: Optional[Union[dict, List[dict]]] = (_DEFAULT_INIT_CFG)
    ) -> None:
        if stem not in ('patch', 'conv'):
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        if stem == 'conv' and stem_patch_size != 4:
            raise ValueError('the conv stem has stride 4; stem_patch_size '
                             f'must be 4, got {stem_patch_size}')
        if isinstance(out_indices, Sequence):
            # mmpretrain rewrites negative indices in place
            out_indices = list(out_indices)
        super().__init__(
            arch=arch,
            in_channels=in_channels,
            stem_patch_size=stem_patch_size,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            linear_pw_conv=linear_pw_conv,
            use_grn=use_grn,
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            gap_before_final_norm=gap_before_final_norm,
            with_cp=with_cp,
            init_cfg=init_cfg)
        self.stem_type = stem
        if stem == 'conv':
            self.downsample_layers[0] = ConvStem(in_channels, self.channels[0],
                                                 norm_cfg, act_cfg)
            # the parent froze the patch stem it built; freeze the new one
            self._freeze_stages()

    def train(self, mode: bool = True) -> 'RobustConvNeXt':
        """Set train/eval mode, keeping frozen stages in eval mode.

        Unlike mmpretrain's ``ConvNeXt.train`` it returns ``self``, as
        ``nn.Module.train`` does, so ``model.eval()`` can be chained.
        """
        super().train(mode)
        return self

    def init_weights(self) -> None:
        """Initialise, running checkpoint loaders last.

        MMEngine's ``BaseModule`` applies a module's own ``init_cfg`` before
        its children's ``init_weights`` and only postpones the stock
        ``Pretrained``. Here every loading initialiser (``RobustPretrained``,
        ``Pretrained``) runs after everything else, so the loaded weights
        are what the backbone ends up with.
        """
        cfgs = self.init_cfg
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        loading = [c for c in cfgs or [] if _is_loading_init(c)]
        if not loading or self.is_init:
            super().init_weights()
            return
        original = self.init_cfg
        self.init_cfg = [c for c in cfgs if not _is_loading_init(c)] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        # super() marked the module initialised; now load on top (inside a
        # segmentor the loaders also note the load in MMEngine's init log)
        initialize(self, loading)
        # a backbone initialised on its own had MMEngine's init report
        # printed inside super().init_weights(), before the load
        print_log(
            f'{type(self).__name__}: the checkpoint loaders '
            f'({", ".join(_init_type_name(c) for c in loading)}) ran after '
            'the other initialisers: the tensors they loaded are final '
            '(an init report printed above this line lists what ran before '
            'them)',
            logger='current')
