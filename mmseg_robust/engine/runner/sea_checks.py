"""What :class:`SEATestLoop` checks about its data before it attacks or
records anything: one plain dataset, no test-time augmentation, labels
present and inside the classes, a model with one output per class. Each
problem is a :class:`~mmseg_robust.errors.ConfigError` (one ``error:``
line in the tools, docs/errors.md)."""
from typing import Optional, Sequence

import torch

from mmseg_robust.errors import ConfigError

__all__ = [
    'dataset_problem', 'TTA_PROBLEM', 'DATASET_WRAPPERS', 'check_pipeline',
    'check_labels', 'check_num_classes'
]

#: Dataset wrappers of MMEngine and MMSeg (their parts' images share
#: indices, so SEA's per-image records would collide).
DATASET_WRAPPERS = ('ConcatDataset', 'RepeatDataset', 'ClassBalancedDataset',
                    'MultiImageMixDataset')

#: Why a test pipeline with ``TestTimeAug`` is refused.
TTA_PROBLEM = (
    'SEA attacks the plain test-time prediction, but the test pipeline '
    'holds TestTimeAug (test-time augmentation, MMSeg\'s tta_pipeline), '
    'which SEA does not support: use the plain test pipeline '
    '(test_dataloader.dataset.pipeline = test_pipeline; no --tta)')


def dataset_problem(dataset) -> Optional[str]:
    """Why :class:`SEATestLoop` cannot evaluate a test dataset (``None`` if
    it can): it needs one plain dataset, not a wrapper.

    Per-image records and random starts are keyed by ``sample_idx``, the
    index of an image in its own dataset, which restarts at 0 in every part
    of a ``ConcatDataset`` (and repeats in a ``RepeatDataset``).

    Args:
        dataset (dict | Dataset): ``test_dataloader.dataset``, as a config
            or built.

    Returns:
        str or None: The problem, for an error message.
    """
    if isinstance(dataset, dict):
        kind = dataset.get('type')
        kind = getattr(kind, '__name__', kind)
        wrapper = kind in DATASET_WRAPPERS or 'datasets' in dataset or \
            'dataset' in dataset
    else:
        kind = type(dataset).__name__
        wrapper = kind in DATASET_WRAPPERS or not hasattr(
            dataset, 'pipeline') and (hasattr(dataset, 'datasets')
                                      or hasattr(dataset, 'dataset'))
    if not wrapper:
        return None
    return (f'SEA evaluates one plain dataset, but test_dataloader.dataset '
            f'is a {kind}: per-image results are keyed by the index of '
            'each image in its own dataset, which restarts at 0 in every '
            'part of a wrapper. Evaluate each part in its own run (a config '
            'whose test_dataloader.dataset is that part, and its own '
            '--work-dir)')


def check_pipeline(transforms: Sequence) -> list:
    """The packing transforms of a test pipeline (they carry each image's
    dataset index); refuses test-time augmentation and pipelines that do
    not end with ``PackSegInputs``."""
    names = [type(t).__name__ for t in transforms]
    if 'TestTimeAug' in names:
        raise ConfigError(TTA_PROBLEM)
    packers = [t for t in transforms if hasattr(t, 'meta_keys')]
    if not packers:
        raise ConfigError(
            'SEATestLoop needs a test pipeline that ends with '
            'PackSegInputs (to carry the dataset index of each image); '
            f'the pipeline is [{", ".join(names)}]')
    return packers


def check_labels(samples: Sequence, num_classes: int,
                 ignore_index: int) -> None:
    """Refuse images without labels or with labels outside the classes
    (before anything of their batch is attacked or recorded).

    Args:
        samples (Sequence[SegDataSample]): The batch's data samples.
        num_classes (int): Classes of the dataset.
        ignore_index (int): The ignored label.

    Raises:
        ConfigError: A sample has no ``gt_sem_seg``, or a label that is
            neither a class index nor ``ignore_index``.
    """
    for s in samples:
        name = s.metainfo.get('img_path', s.metainfo.get('sample_idx'))
        if 'gt_sem_seg' not in s:
            raise ConfigError(
                f'{name} has no ground-truth labels (gt_sem_seg): SEA '
                'needs them; add dict(type=\'LoadAnnotations\') to the '
                'test pipeline, before PackSegInputs')
        label = s.gt_sem_seg.data
        bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
        if bool(bad.any()):
            values = torch.unique(label[bad]).tolist()
            raise ConfigError(
                f'labels out of range: the label map of {name} '
                f'({s.metainfo.get("seg_map_path")}) holds '
                f'{values[:8]}, but the dataset has {num_classes} '
                f'classes (0-{num_classes - 1}) and ignore_index '
                f'{ignore_index}. Check the classes, reduce_zero_label and '
                'ignore_index of test_dataloader.dataset and '
                'test_evaluator')


def check_num_classes(predicted: int, classes: Sequence) -> None:
    """The model's test-time logits have one channel per class of the
    dataset."""
    if predicted != len(classes):
        shown = ', '.join(map(str, classes[:5])) + \
            (', ...' if len(classes) > 5 else '')
        raise ConfigError(
            f'the model predicts {predicted} classes but the test '
            f'dataset has {len(classes)} ({shown}): check '
            'model.decode_head.num_classes and the classes (metainfo) '
            'of test_dataloader.dataset (a model trained with an extra '
            'class is evaluated with type=\'ClassSubsetEncoderDecoder\', '
            'drop_classes=[...])')
