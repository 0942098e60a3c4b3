"""Attack settings are values: the same attack from the settings object and
from the thin wrapper functions, copies and pickles that still run, and the
wrappers refuse what they do not take (docs/attacks.md, "Settings are
values")."""
import copy
import pickle
import warnings

import pytest
import torch

from mmseg_robust.attacks import (APGD, PGD, SEA, PAdam, SEASettings, Square,
                                  apgd, apgd_red_eps, padam, pgd, pgd_train,
                                  run_sea, square_attack)
from ..tiny_models import PixelNet, toy_batch

EPS = 8 / 255


def _same(a, b):
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.correct, b.correct)


@pytest.mark.parametrize(
    'settings, wrapper', [
        (APGD(EPS, 4,
              loss='js'), lambda m, x, y: apgd(m, x, y, EPS, 4, loss='js')),
        (APGD(EPS, 6, schedule='red_eps'),
         lambda m, x, y: apgd_red_eps(m, x, y, EPS, 6)),
        (PGD(EPS, 4, loss='bal_ce'),
         lambda m, x, y: pgd(m, x, y, EPS, 4, loss='bal_ce')),
        (PAdam(EPS, 4), lambda m, x, y: padam(m, x, y, EPS, 4)),
        (Square(EPS, 6), lambda m, x, y: square_attack(m, x, y, EPS, 6)),
    ],
    ids=['apgd', 'red_eps', 'pgd', 'padam', 'square'])
def test_settings_equal_the_wrapper_and_survive_copies(settings, wrapper, net):
    x, y = toy_batch(B=2, seed=3, model=net)
    expected = wrapper(net, x, y)
    _same(settings(net, x, y), expected)
    for other in (copy.copy(settings), copy.deepcopy(settings),
                  pickle.loads(pickle.dumps(settings))):
        assert other == settings
        _same(other(net, x, y), expected)


def test_sea_settings_equal_the_sea_class(net):
    x, y = toy_batch(B=2, seed=4, model=net)
    settings = SEASettings.create(EPS, n_iter=4, version='2023')
    a = run_sea(settings, net, x, y, seed=[1, 2])
    b = SEA(net, EPS, n_iter=4, version='2023').run(x, y, seed=[1, 2])
    _same(a, b)
    _same(settings(net, x, y, seed=[1, 2]), b)
    assert pickle.loads(pickle.dumps(settings)) == settings


@pytest.mark.parametrize('call, name', [
    (lambda m, x, y: pgd_train(m, x, y, EPS, 2, targeted=True), 'targeted'),
    (lambda m, x, y: apgd(m, x, y, EPS, 3, schedule='red_eps'), 'schedule'),
    (lambda m, x, y: apgd_red_eps(m, x, y, EPS, 3, schedule='constant'),
     'schedule'),
    (lambda m, x, y: pgd(m, x, y, EPS, 3, track_loss='ce'), 'track_loss'),
    (lambda m, x, y: padam(m, x, y, EPS, 3, track_loss='ce'), 'track_loss'),
    (lambda m, x, y: square_attack(m, x, y, EPS, 3, n_iter=5), 'n_iter'),
])
def test_wrappers_refuse_what_they_do_not_take(call, name, net):
    x, y = toy_batch(B=1, seed=5, model=net)
    with pytest.raises(TypeError, match=f'unexpected keyword.*{name}'):
        call(net, x, y)


class Noisy(torch.nn.Module):
    """A randomised model: the model check warns about it."""

    def __init__(self):
        super().__init__()
        self.net = PixelNet()

    def forward(self, x):
        out = self.net(x)
        return out + 0.5 * torch.randn_like(out)


def test_a_failed_call_does_not_use_up_the_model_check():
    model = Noisy().eval()
    x, y = toy_batch(B=2, seed=6, model=model.net)
    sea = SEA(model, EPS, n_iter=3)
    with pytest.raises(ValueError):
        sea.run(x, y[:1])  # bad labels: nothing ran
    with pytest.raises(ValueError):
        sea.curve(x, y, [-1.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        sea.run(x, y)
    assert any('different outputs' in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        sea.run(x, y)  # once per SEA
    assert not any('different outputs' in str(w.message) for w in caught)


def test_sea_reads_its_settings_and_assigning_one_replaces_them(net):
    sea = SEA(net, EPS, n_iter=3)
    assert sea.eps == sea.settings.eps == EPS
    assert sea.names == sea.settings.names
    before = sea.settings
    sea.ignore_index = 3
    assert sea.settings.ignore_index == 3 and before.ignore_index == 255
    with pytest.raises(AttributeError, match='read-only'):
        sea.names = ['x']
