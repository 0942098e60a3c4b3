"""warmup_poly_schedule: the schedule of every training config."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mmengine.config import Config

from mmseg_robust.training.schedules import warmup_poly_schedule


@given(
    epochs=st.integers(2, 400),
    warmup=st.integers(0, 50),
    images=st.integers(1, 30000),
    batch=st.integers(1, 64))
def test_iterations_are_epochs_rounded_up(epochs, warmup, images, batch):
    warmup = min(warmup, epochs - 1)
    train_cfg, scheds = warmup_poly_schedule(epochs, warmup, images, batch)
    max_iters = math.ceil(epochs * images / batch)
    assert train_cfg == dict(
        type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000)
    poly = scheds[-1]
    assert poly['type'] == 'PolyLR' and poly['end'] == max_iters
    assert poly['power'] == 1.0 and poly['eta_min'] == 0.0
    if warmup:
        lin, = scheds[:-1]
        assert lin['type'] == 'LinearLR' and lin['begin'] == 0
        # at least warmup epochs of images, one iteration fewer would not be
        assert lin['end'] * batch >= warmup * images
        assert (lin['end'] - 1) * batch < warmup * images
        assert poly['begin'] == lin['end']
    else:
        assert len(scheds) == 1 and poly['begin'] == 0


def test_the_paper_lengths():
    # ADE20K 128 epochs (5 warm-up) and PASCAL-VOC aug 300 epochs (10), total
    # batch 32: the numbers the README's table states
    cfg, (lin, poly) = warmup_poly_schedule(128, 5, 20210, 32)
    assert (cfg['max_iters'], lin['end'], poly['end']) == (80840, 3158, 80840)
    cfg, (lin, poly) = warmup_poly_schedule(300, 10, 10582, 32)
    assert (cfg['max_iters'], lin['end'], poly['end']) == (99207, 3307, 99207)


@pytest.mark.parametrize('kwargs, message', [
    (dict(epochs=0), 'epochs must be an integer >= 1'),
    (dict(epochs=2.5), 'epochs must be an integer >= 1'),
    (dict(warmup_epochs=-1), 'warmup_epochs must be an integer >= 0'),
    (dict(num_images=0), 'num_images must be an integer >= 1'),
    (dict(batch_size=True), 'batch_size must be an integer >= 1'),
    (dict(warmup_epochs=10, epochs=10), r'warmup_epochs \(10\) must be'),
])
def test_bad_input_is_refused(kwargs, message):
    args = dict(epochs=10, warmup_epochs=1, num_images=100, batch_size=8)
    with pytest.raises(ValueError, match=message):
        warmup_poly_schedule(**{**args, **kwargs})


def test_a_config_calling_it_holds_only_plain_values(tmp_path):
    (tmp_path / 'base.py').write_text('x = 1\n')
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "_base_ = ['./base.py']\n"
        'from mmseg_robust.training.schedules import warmup_poly_schedule\n'
        'train_cfg, param_scheduler = warmup_poly_schedule(3, 1, 10, 4)\n')
    cfg = Config.fromfile(str(cfg_file))
    assert 'warmup_poly_schedule' not in cfg
    assert cfg.train_cfg.max_iters == 8
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']
    # dumps and reloads as a plain config
    out = tmp_path / 'dumped.py'
    cfg.dump(str(out))
    assert Config.fromfile(str(out)).param_scheduler[1].end == 8
