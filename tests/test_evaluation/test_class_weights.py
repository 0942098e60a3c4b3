"""SEA-2024's class weights from label frequencies."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_robust.attacks import class_weights_from_counts
from mmseg_robust.evaluation.class_weights import resolve_class_weights


def _direct_counts(root, split):
    import cv2
    counts = np.zeros(3, np.int64)
    for f in sorted((Path(root) / 'ann_dir' / split).glob('*.png')):
        lab = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).ravel()
        counts += np.bincount(lab[lab != 255], minlength=3)[:3]
    return counts


@pytest.mark.parametrize('source,split', [('train', 'train'), ('test', 'val')])
def test_weights_are_inverse_label_frequencies(trained_tiny, source, split):
    cfg = Config.fromfile(trained_tiny['config'])
    got = resolve_class_weights(source, cfg, 3, 255)
    counts = _direct_counts(trained_tiny['data_root'], split)
    expected = class_weights_from_counts(torch.from_numpy(counts)).tolist()
    assert got == pytest.approx(expected, rel=1e-6)


def test_given_per_image_and_bad_weights(trained_tiny):
    cfg = Config.fromfile(trained_tiny['config'])
    assert resolve_class_weights([1, 2, 3], cfg, 3, 255) == [1.0, 2.0, 3.0]
    assert resolve_class_weights('image', cfg, 3, 255) is None
    with pytest.raises(ValueError, match='3 finite numbers'):
        resolve_class_weights([1, 2], cfg, 3, 255)
    with pytest.raises(ValueError, match="use 'train'.*'test'"):
        resolve_class_weights('val', cfg, 3, 255)
    cfg.pop('train_dataloader')
    with pytest.raises(ValueError, match='needs train_dataloader.dataset'):
        resolve_class_weights('train', cfg, 3, 255)
