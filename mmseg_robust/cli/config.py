"""The config of a tool's command line: loaded (with one sentence for a
model this installation cannot build), work dir set, and the recipe options
(``--amp``, ``--crop-size``, ``--test-scale``, ``--data-root``) applied
everywhere MMSeg keeps each setting.
"""
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.config import Config

from .errors import ToolError

__all__ = [
    'load_config', 'set_work_dir', 'config_from_args', 'set_amp',
    'set_crop_size', 'set_test_scale', 'set_data_root', 'AMP_ONLY_KEYS'
]

#: ``AmpOptimWrapper`` arguments that ``OptimWrapper`` does not take.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear message for a missing file, and one
    sentence (not a registry traceback) for a model this installation
    cannot build: CCNet/PSANet without compiled mmcv ops, Mask2Former /
    MaskFormer without mmdet, VPD without its optional packages (see
    :mod:`mmseg_robust.models.requirements`)."""
    from mmseg_robust.models.requirements import model_requirement_problems
    if not osp.isfile(path):
        raise ToolError(f'config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except ImportError:
        # ``custom_imports`` of a package that is not installed
        # (Mask2Former's ``mmdet.models``): say which model needs what
        cfg = Config.fromfile(path, import_custom_modules=False)
        problems = model_requirement_problems(
            cfg.get('model'), cfg.get('custom_imports'))
        if problems:
            raise ToolError(problems[0]) from None
        raise
    problems = model_requirement_problems(cfg.get('model'))
    if problems:
        raise ToolError(problems[0])
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str],
                 config_path: str) -> None:
    """Work dir priority: command line > config > ``./work_dirs/<name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def config_from_args(args) -> Config:
    """The config of a train/test command line: loaded, ``--launcher`` and
    ``--cfg-options`` applied, work dir set (MMSeg's tools do the same)."""
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_work_dir(cfg, args.work_dir, args.config)
    return cfg


def set_amp(cfg: Config, enabled: bool) -> List[str]:
    """Switch mixed-precision training on or off in one place.

    Off: ``AmpOptimWrapper`` becomes ``OptimWrapper`` and the arguments only
    ``AmpOptimWrapper`` takes (``loss_scale``, ``dtype``, ``use_fsdp``) are
    dropped, so ``--cfg-options optim_wrapper.type=OptimWrapper`` alone no
    longer fails on ``loss_scale``. On: ``OptimWrapper`` becomes
    ``AmpOptimWrapper`` with ``loss_scale='dynamic'``.

    Args:
        cfg (Config): The config, changed in place.
        enabled (bool): AMP on or off.

    Returns:
        list: What was changed (for the log), empty if nothing.

    Raises:
        ToolError: The config uses another wrapper type.
    """
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    changes = []
    if enabled:
        if kind == 'OptimWrapper':
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
            changes.append('optim_wrapper.type=AmpOptimWrapper')
        elif kind != 'AmpOptimWrapper':
            raise ToolError('AMP can only be switched on for optim_wrapper '
                            f'type OptimWrapper, the config has {kind}')
        return changes
    if kind == 'AmpOptimWrapper':
        wrapper.type = 'OptimWrapper'
        changes.append('optim_wrapper.type=OptimWrapper')
    if wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
        for key in AMP_ONLY_KEYS:
            if key in wrapper:
                wrapper.pop(key)
                changes.append(f'dropped optim_wrapper.{key}')
    return changes


def _walk(node, visit) -> None:
    """Call ``visit(d)`` on every dict of a config tree."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def set_crop_size(cfg: Config, size: Sequence[int]) -> List[str]:
    """Set the training crop size everywhere MMSeg keeps it.

    Changes every ``RandomCrop.crop_size`` and ``Pad.size`` (all pipelines,
    e.g. both datasets of PASCAL-VOC aug), ``data_preprocessor.size`` (model
    and top level), the top-level ``crop_size`` and, for slide inference,
    ``model.test_cfg.crop_size`` with the stride scaled alike. The image
    scale the pipelines resize to (``RandomResize.scale``) is left alone.

    Args:
        cfg (Config): The config, changed in place.
        size (Sequence[int]): ``(height, width)``.

    Returns:
        list: The keys changed, for the log.
    """
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ToolError(f'--crop-size {h} {w}: both must be positive')
    changed = []

    def visit(d):
        if d.get('type') == 'RandomCrop' and 'crop_size' in d:
            d['crop_size'] = (h, w)
            changed.append('RandomCrop.crop_size')
        elif d.get('type') == 'Pad' and 'size' in d:
            d['size'] = (h, w)
            changed.append('Pad.size')
        pre = d.get('data_preprocessor')
        if isinstance(pre, dict) and pre.get('size') is not None:
            pre['size'] = (h, w)
            changed.append('data_preprocessor.size')

    _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg, visit)
    if 'crop_size' in cfg:
        cfg.crop_size = (h, w)
        changed.append('crop_size')
    test_cfg = cfg.get('model', {}).get('test_cfg', None) or {}
    if test_cfg.get('mode') == 'slide':
        old_h, old_w = test_cfg.get('crop_size', (h, w))
        sh, sw = test_cfg.get('stride', (old_h, old_w))
        test_cfg['crop_size'] = (h, w)
        test_cfg['stride'] = (max(1, round(sh * h / old_h)),
                              max(1, round(sw * w / old_w)))
        changed.append('model.test_cfg.crop_size/stride')
    return sorted(set(changed))


def set_test_scale(cfg: Config, scale: Sequence[int]) -> List[str]:
    """Set the ``Resize.scale`` of the validation and test pipelines.

    Args:
        cfg (Config): The config, changed in place.
        scale (Sequence[int]): MMSeg's ``scale``: ``(long, short)`` sides
            with ``keep_ratio=True`` (MMSeg's default ``(2048, 512)``).

    Returns:
        list: The keys changed, for the log.
    """
    scale = tuple(int(v) for v in scale)
    if min(scale) < 1:
        raise ToolError(f'--test-scale {" ".join(map(str, scale))}: both '
                        'must be positive')
    changed = []

    def visit(d):
        if d.get('type') == 'Resize' and d.get('scale') is not None:
            d['scale'] = scale
            changed.append('Resize.scale')

    for key in ('val_dataloader', 'test_dataloader', 'test_pipeline',
                'val_pipeline'):
        if cfg.get(key, None) is not None:
            before = len(changed)
            _walk(cfg[key], visit)
            if len(changed) > before:
                changed.append(key)
    return sorted(set(changed))


def set_data_root(cfg: Config, root: str) -> List[str]:
    """Point every dataset of the config at ``root`` (MMSeg's dataset bases
    repeat ``data_root`` in each dataset, e.g. three times for PASCAL-VOC
    aug).

    Args:
        cfg (Config): The config, changed in place.
        root (str): Dataset folder.

    Returns:
        list: The keys changed, for the log.
    """
    changed = []

    def visit(d):
        if 'data_root' in d and d.get('type') is not None:
            d['data_root'] = root
            changed.append(f'{d["type"]}.data_root')

    # every dataset dict, also the base files' leftovers (dataset_train ...)
    _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg, visit)
    if 'data_root' in cfg:
        cfg.data_root = root
        changed.append('data_root')
    return sorted(set(changed))
