"""``import mmseg_robust`` is light and changes nothing; the MMSeg side
registers explicitly (custom_imports, its own subpackages, or a call) and
never through import hooks (fresh processes: import order is the point)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ('mmseg', 'mmengine', 'mmcv', 'mmpretrain')


def _start(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True)


def _finish(proc: subprocess.Popen, timeout: int = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_attacks_need_only_torch():
    """The README's promise: SEA on a plain PyTorch model imports no
    MMSeg, MMEngine, mmcv or mmpretrain, patches nothing and installs no
    import hook."""
    out = _finish(
        _start(f"""
        import sys
        import torch
        from mmseg_robust.attacks import SEA
        model = torch.nn.Conv2d(3, 3, 1)
        torch.manual_seed(0)
        x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        res = SEA(model, eps=4 / 255, n_iter=3).run(x, y)
        assert res.x_adv.shape == x.shape
        heavy = sorted(m for m in sys.modules
                       if m.split('.')[0] in {HEAVY!r})
        import mmseg_robust.compat as c
        ours = [f for f in sys.meta_path
                if type(f).__module__.startswith('mmseg_robust')]
        assert not ours, ours
        print(heavy, sorted(set(c.compat_status().values())))
        """))
    heavy, _, status = out.strip().partition('] ')
    assert heavy == '[', f'heavy modules imported: {heavy}]'
    # nothing patched, nothing waiting
    assert status == "['not installed']", status


REGISTERED = """
    from mmseg.registry import DATASETS, HOOKS, LOOPS, METRICS, MODELS
    from mmengine.registry import WEIGHT_INITIALIZERS
    from mmseg_robust import _plugin
    assert _plugin.registered()
    for reg, name in ((LOOPS, 'SEATestLoop'), (METRICS, 'SEAMetric'),
                      (HOOKS, 'AdvTrainingHook'), (MODELS, 'RobustConvNeXt'),
                      (DATASETS, 'ScratchAssayDataset'),
                      (WEIGHT_INITIALIZERS, 'RobustPretrained')):
        assert reg.get(name) is not None, name
    print('ok')
"""

# every way in; 'mmseg_robust then mmseg' is a script that imports the package
# before anything of OpenMMLab and registers explicitly (nothing waits for
# imports); 'evaluation/training/models first' start inside one of the
# package's own MMSeg-side subpackages, where `mmseg` is first imported
# half-way through
ORDERS = {
    'mmseg_robust then mmseg':
    'import mmseg_robust\nimport mmseg\nmmseg_robust.register_all_modules()',
    'mmengine then mmseg_robust': 'import mmengine\nimport mmseg_robust',
    'mmseg then mmseg_robust': 'import mmseg\nimport mmseg_robust',
    'evaluation first': 'from mmseg_robust.evaluation import SEAMetric',
    'training first': 'from mmseg_robust.training import AdvTrainingHook',
    'deprecated engine first': 'import mmseg_robust.engine',
    'models first': 'from mmseg_robust.models import SegmentorAttackModel',
    'lazy attribute':
    'import mmseg_robust\nmmseg_robust.models.RobustConvNeXt',
}


@pytest.mark.slow  # eight fresh MMSeg imports: ~1 min on 2 busy cores
def test_registration_whatever_the_import_order():
    # started together: each is a few seconds of importing
    procs = {
        name: _start(code + '\n' + textwrap.dedent(REGISTERED))
        for name, code in ORDERS.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f'{name}: {err[-3000:]}'
        assert out.strip().endswith('ok'), name


TINY_CFG = """
custom_imports = dict(imports=['mmseg_robust'], allow_failed_imports=False)
default_scope = 'mmseg'
work_dir = {work_dir!r}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[120., 120., 120.],
                           std=[50., 50., 50.], bgr_to_rgb=True,
                           size=(32, 32), pad_val=0, seg_pad_val=255),
    backbone=dict(type='ResNetV1c', depth=18, num_stages=1, out_indices=(0, ),
                  strides=(2, ), dilations=(1, ), stem_channels=8,
                  base_channels=8, norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=8, in_index=0, channels=8,
                     num_convs=1, concat_input=False, dropout_ratio=0.0,
                     num_classes=3, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss')),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
dataset = dict(
    type='BaseSegDataset', data_root={data_root!r},
    data_prefix=dict(img_path='img_dir/{{}}', seg_map_path='ann_dir/{{}}'),
    img_suffix='.png', seg_map_suffix='.png',
    metainfo=dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0]] * 3),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
              dict(type='PackSegInputs')])
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler'),
    dataset=dict(dataset, data_prefix=dict(img_path='img_dir/train',
                                           seg_map_path='ann_dir/train')))
test_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler',
                                              shuffle=False),
    dataset=dict(dataset, data_prefix=dict(img_path='img_dir/val',
                                           seg_map_path='ann_dir/val')))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
test_cfg = dict(type='SEATestLoop', eps=[4 / 255], n_iter=3, max_images=2)
test_evaluator = dict(type='SEAMetric')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
custom_hooks = [dict(type='AdvTrainingHook', eps=4 / 255, steps=1)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                     by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
log_level = 'WARNING'
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""


@pytest.fixture
def custom_imports_config(tmp_path, toy_data):
    path = tmp_path / 'cfg.py'
    path.write_text(
        TINY_CFG.format(work_dir=str(tmp_path / 'work'), data_root=toy_data))
    return path


RUN = """
import sys
{first}
from mmengine.config import Config
from mmengine.runner import Runner
assert 'mmseg_robust' not in sys.modules
cfg = Config.fromfile({path!r})
runner = Runner.from_cfg(cfg)
runner.train()
hooks = [type(h).__name__ for h in runner.hooks]
assert 'AdvTrainingHook' in hooks, hooks
metrics = runner.test()
assert type(runner.test_loop).__name__ == 'SEATestLoop'
print(sorted(k for k in metrics if k.startswith('sea/eps4/worst')))
"""


@pytest.mark.parametrize(
    'first', [
        '',
        pytest.param(
            'from mmseg.registry import RUNNERS', marks=pytest.mark.slow)
    ],
    ids=['mmseg-after-config', 'mmseg-before-config'])
def test_custom_imports_registers_for_a_real_runner(custom_imports_config,
                                                    first):
    """Only ``custom_imports=dict(imports=['mmseg_robust'])`` names the
    package: MMSeg imported after the config is read (MMEngine's lazy
    registry import) or before it (as MMSeg's own tools do)."""
    out = _finish(
        _start(RUN.format(first=first, path=str(custom_imports_config))))
    assert 'sea/eps4/worst/mIoU' in out


MMSEG_TRAIN = Path(__import__('importlib').util.find_spec(
    'mmseg').origin).parent / '.mim' / 'tools' / 'train.py'


@pytest.mark.slow
@pytest.mark.skipif(
    not MMSEG_TRAIN.is_file(), reason='MMSeg installed without its .mim tools')
def test_mmsegs_own_train_tool_with_custom_imports(custom_imports_config,
                                                   tmp_path):
    """"Use your own tools": MMSeg's tools/train.py, unchanged."""
    res = subprocess.run([
        sys.executable,
        str(MMSEG_TRAIN),
        str(custom_imports_config), '--work-dir',
        str(tmp_path / 'own')
    ],
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / 'own' / 'iter_2.pth').is_file()


@pytest.mark.skipif(
    not MMSEG_TRAIN.is_file(), reason='MMSeg installed without its .mim tools')
def test_mmsegs_own_train_tool_and_mmseg_bases(tmp_path):
    """The documented limit: MMSeg's tool parses `mmseg::` bases before
    `custom_imports` can load the plugin, so without pkg_resources it fails
    with MMEngine's own error; with pkg_resources it gets past parsing."""
    import importlib.util
    cfg = REPO / 'configs' / 'demo' / \
        'upernet_convnext-demo_clean_1xb8-400it_scratch-assay-64x64.py'
    res = subprocess.run([
        sys.executable,
        str(MMSEG_TRAIN),
        str(cfg), '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_iters=0',
        'train_dataloader.dataset.data_root=' + str(tmp_path / 'nodata')
    ],
                         capture_output=True,
                         text=True,
                         timeout=300)
    if importlib.util.find_spec('pkg_resources') is None:
        assert res.returncode != 0
        assert "No module named 'pkg_resources'" in res.stderr
    else:
        assert "No module named 'pkg_resources'" not in res.stderr
