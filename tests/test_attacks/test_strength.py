"""Attack strength on a small model trained in the test (seconds on CPU)."""
import pytest
import torch

from mmseg_robust.attacks import (SEA, SEA_LOSSES, apgd, apgd_red_eps,
                                  derive_seed, pgd)
from ..tiny_models import train_small_segnet


@pytest.fixture(scope='module')
def trained():
    model, x_test, y_test = train_small_segnet(48, 150, 8)
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc > 0.85, f'toy model did not train ({acc:.2f})'
    return model, x_test, y_test


def _acc(res):
    return res.correct.sum().item() / res.valid.sum().item()


@pytest.mark.slow
def test_sea_at_least_as_strong_as_each_attack(trained):
    model, x, y = trained
    # the toy classes are far apart in colour: large radii are needed
    eps, n_iter = 20 / 255, 30
    sea = SEA(model, eps, n_iter=n_iter, seed=0, version='2023').run(x, y)
    clean = sea.clean_correct.sum().item() / sea.valid.sum().item()
    worst = _acc(sea)
    assert worst < clean - 0.05  # the attack does something
    # the same runs SEA makes: each attack seeded by the seed and its name
    singles = {
        loss:
        _acc(
            apgd_red_eps(
                model,
                x,
                y,
                eps,
                n_iter,
                loss=loss,
                start=derive_seed(0, loss)))
        for loss in SEA_LOSSES
    }
    for name in ('ce', 'bal_ce', 'cossim_ce'):
        singles['pgd-' + name] = _acc(pgd(model, x, y, eps, n_iter, loss=name))
    for name, acc in singles.items():
        assert worst <= acc + 1e-12, (name, acc, worst)


@pytest.mark.slow
def test_apgd_not_weaker_than_pgd_at_equal_budget(trained):
    model, x, y = trained
    n_iter = 30
    for eps in (20 / 255, 32 / 255):
        a = _acc(apgd(model, x, y, eps, n_iter, loss='mask_ce', start=0))
        p = _acc(pgd(model, x, y, eps, n_iter, loss='ce'))
        # APGD may be stronger; PGD must not win by more than noise
        assert a <= p + 0.02, (eps, a, p)
