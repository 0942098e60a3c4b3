"""One place each for AMP, crop size, test scale and data root
(``tools/train.py --no-amp --crop-size --test-scale --data-root``), the CPU
smoke run the config README documents, and the demo config trained by a bare
``tools/train.py`` (its dataset builds itself)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmseg_robust  # noqa: F401
from mmseg_robust.cli import (ToolError, set_amp, set_crop_size, set_data_root,
                              set_test_scale, setup_cpu_distributed)
from ..conftest import load_tool, scratch_assay_sample_or_skip

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / 'configs' / 'upernet_convnext_at'
VOC = RECIPES / ('upernet_convnext-t_at2-clean-init_4xb8-50ep_'
                 'voc12aug-512x512.py')
ADE = RECIPES / ('upernet_convnext-t_at5-robust-init_4xb8-32ep_'
                 'ade20k-512x512.py')
DEMO = REPO / 'configs' / 'demo' / \
    'upernet_convnext-demo_clean_1xb8-400it_scratch-assay-64x64.py'


def _find(node, pred, out=None):
    out = [] if out is None else out
    if isinstance(node, dict):
        if pred(node):
            out.append(node)
        for v in node.values():
            _find(v, pred, out)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _find(v, pred, out)
    return out


def _type(name):
    return lambda d: d.get('type') == name


def test_no_amp_is_one_switch():
    cfg = Config.fromfile(str(VOC))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    changes = set_amp(cfg, False)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    assert changes == [
        'optim_wrapper.type=OptimWrapper', 'dropped optim_wrapper.loss_scale'
    ]
    # the rest of the recipe's optimiser stays
    assert cfg.optim_wrapper.constructor == \
        'LearningRateDecayOptimizerConstructor'
    # a bare --cfg-options optim_wrapper.type=OptimWrapper is cleaned too
    cfg = Config.fromfile(str(VOC))
    cfg.merge_from_dict({'optim_wrapper.type': 'OptimWrapper'})
    assert set_amp(cfg, False) == ['dropped optim_wrapper.loss_scale']
    set_amp(cfg, True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    cfg.optim_wrapper.type = 'ApexOptimWrapper'
    with pytest.raises(ToolError, match='OptimWrapper'):
        set_amp(cfg, True)


def test_crop_size_reaches_every_key_of_voc_aug():
    cfg = Config.fromfile(str(VOC))
    crops = _find(cfg._cfg_dict, _type('RandomCrop'))
    pads = _find(cfg._cfg_dict, _type('Pad'))
    assert len(crops) >= 2 and len(pads) >= 2  # VOC + SBD datasets
    set_crop_size(cfg, (64, 48))
    for d in crops:
        assert tuple(d['crop_size']) == (64, 48)
    for d in pads:
        assert tuple(d['size']) == (64, 48)
    assert tuple(cfg.model.data_preprocessor.size) == (64, 48)
    assert tuple(cfg.crop_size) == (64, 48)
    # the training dataloader is what the Runner builds from
    for ds in cfg.train_dataloader.dataset.datasets:
        crop = next(t for t in ds.pipeline if t['type'] == 'RandomCrop')
        assert tuple(crop['crop_size']) == (64, 48)


def test_crop_size_scales_the_slide_window():
    cfg = Config.fromfile(str(ADE))
    assert cfg.model.test_cfg.mode == 'slide'
    set_crop_size(cfg, (256, 256))
    assert tuple(cfg.model.test_cfg.crop_size) == (256, 256)
    assert tuple(cfg.model.test_cfg.stride) == (170, 170)  # 341 / 512


def test_test_scale_and_data_root():
    cfg = Config.fromfile(str(VOC))
    set_test_scale(cfg, (256, 128))
    for key in ('val_dataloader', 'test_dataloader'):
        resize = _find(cfg[key], _type('Resize'))
        assert resize and all(tuple(r['scale']) == (256, 128) for r in resize)
    # training scale untouched
    for r in _find(cfg.train_dataloader, _type('RandomResize')):
        assert tuple(r['scale']) == (2048, 512)
    set_data_root(cfg, '/data/voc')
    roots = [
        d['data_root'] for d in _find(
            cfg._cfg_dict, lambda d: 'data_root' in d and 'type' in d)
    ]
    assert len(roots) >= 4 and set(roots) == {'/data/voc'}


def test_fewer_gpus_than_processes_is_a_clear_error(monkeypatch):
    cfg = Config(dict(model_wrapper_cfg=None))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    with pytest.raises(ToolError, match='CUDA_VISIBLE_DEVICES'):
        setup_cpu_distributed(cfg, 'pytorch')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    setup_cpu_distributed(cfg, 'pytorch')  # one process per GPU: fine


def _fake_voc(root: Path, n: int = 4) -> Path:
    """PASCAL-VOC + SBD layout with random images and labels."""
    import cv2
    rng = np.random.default_rng(0)
    for sub in ('JPEGImages', 'SegmentationClass', 'SegmentationClassAug',
                'ImageSets/Segmentation'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f'2007_{i:06d}' for i in range(n)]
    for name in names:
        img = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        label = rng.integers(0, 21, (72, 96)).astype(np.uint8)
        label[:4] = 255
        cv2.imwrite(str(root / 'JPEGImages' / f'{name}.jpg'), img)
        for sub in ('SegmentationClass', 'SegmentationClassAug'):
            cv2.imwrite(str(root / sub / f'{name}.png'), label)
    for split in ('train', 'aug', 'val'):
        (root / 'ImageSets' / 'Segmentation' /
         f'{split}.txt').write_text('\n'.join(names) + '\n')
    return root


@pytest.mark.slow  # full-size UPerNet + ConvNeXt-T, AT^2: ~1 min
def test_cpu_smoke_run_of_a_paper_recipe(tmp_path, monkeypatch):
    """The command of configs/upernet_convnext_at/README.md, "CPU smoke
    run", on a fabricated PASCAL-VOC: no GPU, no download."""
    data = _fake_voc(tmp_path / 'VOC2012')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    main = load_tool('train')
    main([
        str(VOC), '--work-dir',
        str(tmp_path / 'work'), '--no-amp', '--crop-size', '64', '64',
        '--test-scale', '128', '64', '--data-root',
        str(data), '--cfg-options', 'model.backbone.init_cfg=None',
        'train_cfg.max_iters=2', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False',
        'default_hooks.checkpoint.save_last=False'
    ])
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    # validation runs after the last (2nd) training iteration
    assert 'Iter(val) [4/4]' in log and 'mIoU' in log


def test_amp_on_a_cpu_says_no_amp(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    main = load_tool('train')
    with pytest.raises(SystemExit, match='--no-amp'):
        main([str(VOC), '--work-dir', str(tmp_path)])


def test_demo_config_builds_its_dataset(tmp_path):
    """`tools/train.py configs/demo/...` with no dataset prepared: it is
    built from the installed ndev-sampledata package, then training runs."""
    pytest.importorskip('tifffile')
    scratch_assay_sample_or_skip()  # without importing it (needs bioio)
    data = tmp_path / 'data'
    main = load_tool('train')
    main([
        str(DEMO), '--work-dir',
        str(tmp_path / 'work'), '--data-root',
        str(data), '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=100',
        'default_hooks.checkpoint.save_last=False'
    ])
    assert (data / 'meta.json').is_file()
    assert len(os.listdir(data / 'img_dir' / 'train')) == 80
