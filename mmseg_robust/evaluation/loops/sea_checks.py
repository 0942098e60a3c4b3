"""What :class:`SEATestLoop` checks about its data before it attacks or
records anything: one plain dataset, no test-time augmentation, labels
present and inside the classes, a model with one output per class. Each
problem is a :class:`~mmseg_robust.errors.ConfigError` (one ``error:``
line in the tools, docs/errors.md). Also the set-up the checks go with:
the dataloader config, the dataset index in the metainfo, the metric and
the ignored label."""
import copy
from contextlib import contextmanager
from typing import Optional, Sequence

import torch

from mmseg_robust.adapter import final_decode_head, unwrap_segmentor
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation.metrics import SEAMetric

__all__ = [
    'dataset_problem', 'TTA_PROBLEM', 'DATASET_WRAPPERS', 'check_pipeline',
    'check_labels', 'check_num_classes', 'check_max_images', 'sea_dataloader',
    'EMPTY_DATASET', 'dataset_errors', 'check_dataset', 'expose_sample_idx',
    'find_sea_metric', 'resolve_ignore_index'
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


def check_max_images(max_images) -> Optional[int]:
    """``max_images`` as an int (``None``: every image); refuses < 1."""
    if max_images is not None and int(max_images) < 1:
        raise ConfigError(f'max_images must be >= 1, got {max_images}')
    return None if max_images is None else int(max_images)


def sea_dataloader(dataloader, max_images: Optional[int]):
    """The test dataloader config as the loop builds it: a dataset wrapper
    refused, with ``max_images`` only the first images (a built dataloader
    is returned as it is)."""
    if not isinstance(dataloader, dict):
        return dataloader
    problem = dataset_problem(dataloader.get('dataset') or {})
    if problem:
        raise ConfigError(problem)
    if max_images is not None:
        dataloader = copy.deepcopy(dataloader)
        dataloader['dataset']['indices'] = max_images
    return dataloader


#: Why an empty test dataset is refused.
EMPTY_DATASET = ('the test dataset is empty: check data_root, data_prefix '
                 'and ann_file of test_dataloader.dataset')


@contextmanager
def dataset_errors():
    """Building the test dataloader: an empty or missing dataset becomes a
    :class:`ConfigError` that says what to check."""
    try:
        yield
    except ValueError as err:
        # mmengine's serialisation of an empty data list fails so
        if 'need at least one array' in str(err):
            raise ConfigError(EMPTY_DATASET) from err
        raise
    except FileNotFoundError as err:
        raise ConfigError(f'the test dataset could not be built: {err}. Check '
                          'data_root, data_prefix and ann_file of '
                          'test_dataloader.dataset') from err


def check_dataset(dataset) -> None:
    """The built test dataset is one plain, non-empty dataset."""
    problem = dataset_problem(dataset)
    if problem:
        raise ConfigError(problem)
    if len(dataset) == 0:
        raise ConfigError(EMPTY_DATASET)


def expose_sample_idx(dataset) -> None:
    """Add the dataset index to the packed metainfo: records are keyed by
    it and random starts are seeded with it."""
    pipeline = getattr(dataset, 'pipeline', None)
    for t in check_pipeline(getattr(pipeline, 'transforms', [])):
        if 'sample_idx' not in t.meta_keys:
            t.meta_keys = tuple(t.meta_keys) + ('sample_idx', )


def find_sea_metric(evaluator):
    """The evaluator's :class:`SEAMetric` (a ConfigError without one)."""
    for metric in evaluator.metrics:
        if isinstance(metric, SEAMetric):
            return metric
    raise ConfigError(
        'SEATestLoop needs test_evaluator=dict(type=\'SEAMetric\'), got '
        f'{[type(m).__name__ for m in evaluator.metrics]}; '
        'tools/test.py --eval sea sets both')


def resolve_ignore_index(loop_value: Optional[int],
                         metric_value: Optional[int], model) -> int:
    """The label the evaluation ignores: the metric's ``ignore_index`` if
    its config sets one, else the loop's, else the final decode head's
    (MMSeg's default 255).

    Raises:
        ConfigError: The loop and the metric are given different ones.
    """
    if loop_value is not None and metric_value is not None and \
            int(loop_value) != int(metric_value):
        raise ConfigError(
            f'SEATestLoop has ignore_index={loop_value} but SEAMetric has '
            f'ignore_index={metric_value}: the attacks and the metric must '
            'ignore the same label; set it in one place (test_evaluator)')
    for value in (metric_value, loop_value):
        if value is not None:
            return int(value)
    return int(
        getattr(
            final_decode_head(unwrap_segmentor(model)), 'ignore_index', 255))
