"""Fixtures of the bad-input tests of ``tools/test.py`` and
``tools/train.py`` (their shared helpers are in ``bad_input.py``)."""
import argparse
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from mmseg_robust.compat import checkpoint as safe_ckpt
from .bad_input import LAUNCHER_VARS, save_config


@pytest.fixture(scope='module')
def ctx(trained_tiny, tmp_path_factory):
    """Bad files, configs and data around the tiny trained model."""
    root = tmp_path_factory.mktemp('bad_input')
    c = SimpleNamespace(
        root=root, cfg=trained_tiny['config'], ckpt=trained_tiny['ckpt'])
    c.work = str(root / 'work')
    base = Config.fromfile(c.cfg)
    data = c.data = trained_tiny['data_root']

    # checkpoints
    good = Path(c.ckpt).read_bytes()
    c.empty_ckpt = str(root / 'empty.pth')
    Path(c.empty_ckpt).write_bytes(b'')
    c.truncated_ckpt = str(root / 'truncated.pth')
    Path(c.truncated_ckpt).write_bytes(good[:len(good) // 2])
    c.random_ckpt = str(root / 'random.pth')
    Path(c.random_ckpt).write_bytes(b'not a checkpoint at all' * 40)
    c.unsafe_ckpt = str(root / 'unsafe.pth')
    state = torch.load(c.ckpt, weights_only=False)
    state['meta']['args'] = argparse.Namespace(lr=0.1)
    torch.save(state, c.unsafe_ckpt)
    # a TorchScript archive: torch.load hands it to torch.jit.load (before
    # torch 2.6 even with weights_only=True); safe loading refuses it
    c.script_ckpt = str(root / 'scripted.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit is deprecated in 2.14
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), c.script_ckpt)
    c.afile = str(root / 'a_file')
    Path(c.afile).write_text('not a directory')

    # data
    c.empty_data = str(root / 'empty_data')
    for sub in ('img_dir/val', 'ann_dir/val'):
        os.makedirs(os.path.join(c.empty_data, sub))
    c.bad_labels = str(root / 'bad_labels')
    shutil.copytree(data, c.bad_labels)
    import cv2
    label_path = os.path.join(c.bad_labels, 'ann_dir', 'val', 'val_000.png')
    label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
    label[0, :4] = 7
    cv2.imwrite(label_path, label)
    c.bad_label_file = label_path

    # configs
    def variant(name, change):
        cfg = Config.fromfile(c.cfg)
        change(cfg)
        return save_config(cfg, root / f'{name}.py')

    test_ds = base.test_dataloader.dataset.to_dict()
    tta_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(
            type='TestTimeAug',
            transforms=[[
                dict(type='RandomFlip', prob=0., direction='horizontal')
            ], [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
    ]

    def no_test(cfg):
        for key in ('test_dataloader', 'test_cfg', 'test_evaluator'):
            cfg.pop(key)

    def concat(cfg):
        cfg.test_dataloader.dataset = dict(
            type='ConcatDataset', datasets=[test_ds, test_ds])

    def tta_pipe(cfg):
        cfg.test_dataloader.dataset.pipeline = tta_pipeline

    def tta_model(cfg):
        cfg.model = dict(type='SegTTAModel', module=cfg.model)

    def no_annotations(cfg):
        cfg.test_dataloader.dataset.pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='PackSegInputs')
        ]

    def no_pack(cfg):
        cfg.test_dataloader.dataset.pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations')
        ]

    def four_classes(cfg):
        cfg.test_dataloader.dataset.metainfo = dict(
            classes=('background', 'stripe', 'blob', 'sky'),
            palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]])

    c.no_test_cfg = variant('no_test', no_test)
    c.concat_cfg = variant('concat', concat)
    c.tta_pipe_cfg = variant('tta_pipeline', tta_pipe)
    c.tta_model_cfg = variant('tta_model', tta_model)
    c.no_ann_cfg = variant('no_annotations', no_annotations)
    c.no_pack_cfg = variant('no_pack', no_pack)
    c.four_classes_cfg = variant('four_classes', four_classes)
    c.four_class_model_cfg = variant(
        'four_class_model',
        lambda cfg: cfg.model.decode_head.update(num_classes=4))
    return c


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher or debug variables, no checkpoint trusted. Use with
    ``pytestmark = pytest.mark.usefixtures('clean_env')``."""
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(safe_ckpt, '_trusted', set())
