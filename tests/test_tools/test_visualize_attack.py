"""tools/visualize_attack.py on the tiny trained model."""
import os

import pytest

from ..conftest import load_tool


def _image(trained):
    return os.path.join(trained['data_root'], 'img_dir', 'val', 'val_000.png')


def test_panel_for_two_models(trained_tiny, tmp_path):
    out = tmp_path / 'panel.png'
    results = load_tool('visualize_attack')([
        trained_tiny['config'], trained_tiny['ckpt'],
        _image(trained_tiny), '--model', trained_tiny['config'],
        trained_tiny['ckpt'], '--names', 'a', 'b', '--target-class', 'blob',
        '--eps', '16', '--n-iter', '5', '--out',
        str(out)
    ])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert len(results) == 2
    for r in results:
        # targeted: more pixels of the target class than the clean model
        assert 0 <= r['target_rate'] <= 1
        assert r['sea_acc'] <= r['clean_acc']
        assert (r['x_adv'] - r['image']).abs().max() <= 16 / 255 + 1e-6


def test_without_ground_truth_attacks_the_prediction(trained_tiny, tmp_path):
    import shutil
    image = tmp_path / 'lonely.png'
    shutil.copy(_image(trained_tiny), image)
    results = load_tool('visualize_attack')([
        trained_tiny['config'], trained_tiny['ckpt'],
        str(image), '--target-class', 'stripe', '--eps', '8', '--n-iter', '3',
        '--out',
        str(tmp_path / 'p.png')
    ])
    assert results[0]['clean_acc'] == pytest.approx(1.0)


class TestBadInput:

    def test_unknown_class(self, trained_tiny, tmp_path):
        with pytest.raises(SystemExit, match='background, stripe, blob'):
            load_tool('visualize_attack')([
                trained_tiny['config'], trained_tiny['ckpt'],
                _image(trained_tiny), '--target-class', 'grass', '--out',
                str(tmp_path / 'p.png')
            ])

    def test_missing_image(self, trained_tiny, tmp_path):
        with pytest.raises(SystemExit, match='does not exist'):
            load_tool('visualize_attack')([
                trained_tiny['config'], trained_tiny['ckpt'],
                str(tmp_path / 'nope.png'), '--target-class', 'blob'
            ])

    def test_eps_units(self, trained_tiny, tmp_path):
        with pytest.raises(SystemExit, match='units of 1/255'):
            load_tool('visualize_attack')([
                trained_tiny['config'], trained_tiny['ckpt'],
                _image(trained_tiny), '--target-class', 'blob', '--eps', '300'
            ])
        with pytest.warns(UserWarning, match='units of 1/255'):
            load_tool('visualize_attack')([
                trained_tiny['config'], trained_tiny['ckpt'],
                _image(trained_tiny), '--target-class', 'blob', '--eps',
                '0.03', '--n-iter', '3', '--out',
                str(tmp_path / 'p.png')
            ])
