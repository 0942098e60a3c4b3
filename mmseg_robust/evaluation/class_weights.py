"""Class weights of SEA-2024's ``mask_ce_bal`` from training-label
frequencies (docs/attacks.md, "Versions")."""
import copy
import json
import os.path as osp
import time
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log

from mmseg_robust.errors import ConfigError

__all__ = ['count_labels', 'resolve_class_weights', 'load_class_weights']


def _strip_pipeline(cfg) -> None:
    """Replace every pipeline of a (possibly wrapped) dataset config by
    ``LoadAnnotations`` alone: labels as the dataset defines them
    (``reduce_zero_label``, label maps), no random crops or flips."""
    if 'pipeline' in cfg or 'data_prefix' in cfg:
        cfg['pipeline'] = [dict(type='LoadAnnotations')]
    for key in ('dataset', ):
        if isinstance(cfg.get(key), dict):
            _strip_pipeline(cfg[key])
    for sub in cfg.get('datasets', []) or []:
        if isinstance(sub, dict):
            _strip_pipeline(sub)


def _label_of(item) -> np.ndarray:
    if 'gt_seg_map' in item:
        return np.asarray(item['gt_seg_map'])
    # a full test pipeline: PackSegInputs' data sample
    return item['data_samples'].gt_sem_seg.data.squeeze(0).numpy()


def count_labels(dataset_cfg: dict,
                 num_classes: int,
                 ignore_index: int = 255,
                 keep_pipeline: bool = False) -> np.ndarray:
    """Pixel count of every class over a dataset's label maps.

    Args:
        dataset_cfg (dict): A dataset config (e.g. ``train_dataloader
            .dataset``).
        num_classes (int): Number of classes.
        ignore_index (int): Label that is not counted.
        keep_pipeline (bool): Count the labels the dataset's own pipeline
            produces (a deterministic test pipeline: resized or cropped as
            evaluated); otherwise the pipelines are replaced by
            ``LoadAnnotations`` (the label maps as stored, for training
            sets with random transforms).

    Returns:
        np.ndarray: ``(num_classes,)`` int64 counts.
    """
    from mmseg.registry import DATASETS
    cfg = copy.deepcopy(dict(dataset_cfg))
    if not keep_pipeline:
        _strip_pipeline(cfg)
    try:
        dataset = DATASETS.build(cfg)
    except FileNotFoundError as err:
        raise ConfigError(
            'the dataset whose labels give the class weights of mask_ce_bal '
            f'could not be built: {err}. Fix its config, or give the weights '
            '(--class-weights W1 W2 ... or image)') from err
    counts = np.zeros(num_classes, np.int64)
    n = len(dataset)
    t0 = time.perf_counter()
    for i in range(n):
        label = _label_of(dataset[i]).astype(np.int64)
        label = label[(label != ignore_index) & (label >= 0)]
        if label.size and label.max() >= num_classes:
            raise ConfigError(
                f'label map {i} holds class {int(label.max())} but the '
                f'model has {num_classes} classes: check num_classes, '
                'reduce_zero_label and ignore_index')
        counts += np.bincount(label, minlength=num_classes)
        if (i + 1) % 500 == 0:
            print_log(
                f'SEA-2024 class weights: counted the labels of {i + 1}/{n} '
                f'images ({time.perf_counter() - t0:.0f} s)',
                logger='current')
    return counts


def resolve_class_weights(spec: Union[None, str,
                                      Sequence[float]], cfg, num_classes: int,
                          ignore_index: int) -> Optional[List[float]]:
    """The ``mask_ce_bal`` class weights an evaluation uses.

    Args:
        spec: ``'train'`` (inverse frequency of the training labels of
            ``cfg.train_dataloader``), ``'test'`` (of the evaluated images'
            labels as the test pipeline produces them; the authors' choice
            for PASCAL-VOC, from the validation crops), ``'image'`` or
            ``None`` (each image's own label frequencies), or
            ``num_classes`` numbers.
        cfg: The runner's config.
        num_classes (int): Number of classes.
        ignore_index (int): Ignored label.

    Returns:
        list | None: ``num_classes`` weights, or ``None`` for per-image
        weights.
    """
    from mmseg_robust.attacks import class_weights_from_counts
    if spec is None or spec == 'image':
        return None
    if isinstance(spec, str):
        if spec not in ('train', 'test'):
            raise ConfigError(
                f"class_weights={spec!r}: use 'train' (training-label "
                "frequencies), 'test' (frequencies in the evaluated images), "
                f"'image' (per-image frequencies) or a list of {num_classes} "
                'numbers')
        key = f'{spec}_dataloader'
        loader = cfg.get(key) if cfg is not None else None
        if not loader or 'dataset' not in loader:
            raise ConfigError(
                f"class_weights='{spec}' needs {key}.dataset in the config "
                'to count its labels; give the weights instead '
                '(test_cfg.class_weights=[...] or --class-weights W1 W2 ...) '
                "or use per-image weights ('image')")
        counts = count_labels(
            loader['dataset'],
            num_classes,
            ignore_index,
            keep_pipeline=spec == 'test')
        if counts.sum() == 0:
            raise ConfigError(f'the {spec} labels hold no valid pixel: '
                              'cannot compute class weights')
        weights = class_weights_from_counts(torch.from_numpy(counts))
        return [float(w) for w in weights]
    weights = [float(w) for w in spec]
    if len(weights) != num_classes or any(not np.isfinite(w) or w < 0
                                          for w in weights):
        raise ConfigError(
            f'class_weights must be {num_classes} finite numbers >= 0 (one '
            f'per class), got {len(weights)}: {weights[:8]}')
    return weights


def load_class_weights(spec: Union[None, str, Sequence[float]],
                       cfg,
                       num_classes: int,
                       ignore_index: int,
                       path: str,
                       resume: bool = False) -> Optional[List[float]]:
    """:func:`resolve_class_weights`, counting labels only once: weights
    counted before are read from ``path`` (a JSON file beside the results),
    new ones are written there. On resume an existing file stays as it is
    (other weights are refused with the other settings; nothing is lost).
    """
    if spec in ('train', 'test') and osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            stored = json.load(f)
        if stored.get('num_classes') == num_classes and \
                stored.get('source') == spec:
            return stored['weights']
    if spec in ('train', 'test'):
        print_log(
            f'SEA-2024: counting the {spec} labels for the class weights '
            f'of mask_ce_bal (once; stored in {path})',
            logger='current')
    weights = resolve_class_weights(spec, cfg, num_classes, ignore_index)
    if weights is not None and not (resume and osp.isfile(path)):
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(
                dict(
                    source=spec if isinstance(spec, str) else 'given',
                    num_classes=num_classes,
                    weights=weights),
                f,
                indent=1)
    return weights
