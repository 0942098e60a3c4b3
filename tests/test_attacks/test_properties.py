"""Invariants of every attack, as hypothesis property tests."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import SEA, apgd, apgd_red_eps, pgd
from ..tiny_models import PixelNet

NET = PixelNet(seed=3).eval()


def _fragile(x):
    return 40 * (x - 0.5)


MODELS = {'net': NET, 'fragile': _fragile}
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    B = draw(st.integers(1, 3))
    H = draw(st.integers(4, 9))
    W = draw(st.integers(4, 9))
    spread = draw(st.sampled_from([1.0, 0.05]))
    x = (0.5 + (torch.rand(B, 3, H, W, generator=g) - 0.5) * spread)
    # saturate some pixels at the box borders
    x[..., 0, 0] = 0.0
    x[..., -1, -1] = 1.0
    model = MODELS[draw(st.sampled_from(sorted(MODELS)))]
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(B, H, W, generator=g) < draw(st.sampled_from([0, .3]))
    y = torch.where(flip, (y + 1) % 3, y)
    y[torch.rand(B, H, W, generator=g) < 0.1] = 255
    eps = draw(st.sampled_from([0.0, 0.5 / 255, 4 / 255, 16 / 255]))
    return model, x, y, eps, seed


def _check_feasible(x_adv, x, eps):
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if eps == 0:
        assert torch.equal(x_adv, x)


@SETTINGS
@given(
    problems(),
    st.sampled_from([
        'mask_ce', 'bal_ce', 'js', 'mask_sph', 'ce', 'cossim_ce', 'mask_ce_bal'
    ]), st.integers(3, 6))
def test_apgd_attacks_are_feasible_and_not_worse_than_clean(
        problem, loss, n_iter):
    model, x, y, eps, seed = problem
    with torch.no_grad():
        clean = ((model(x).argmax(1) == y) & (y != 255)).flatten(1).sum(1)
    for attack in (apgd, apgd_red_eps):
        res = attack(model, x, y, eps, n_iter, loss=loss, start=seed)
        _check_feasible(res.x_adv, x, eps)
        assert (res.correct <= clean).all()
        with torch.no_grad():
            got = ((model(res.x_adv).argmax(1) == y) &
                   (y != 255)).flatten(1).sum(1)
        assert torch.equal(got, res.correct)


@SETTINGS
@given(problems(), st.sampled_from(['ce', 'bal_ce', 'cossim_ce']),
       st.booleans())
def test_pgd_is_feasible(problem, loss, random_start):
    model, x, y, eps, seed = problem
    res = pgd(
        model, x, y, eps, 4, loss=loss, start=seed if random_start else None)
    _check_feasible(res.x_adv, x, eps)


@SETTINGS
@given(problems(), st.booleans())
def test_sea_worst_below_each_attack_below_clean(problem, skip_broken):
    model, x, y, eps, seed = problem
    res = SEA(
        model, eps, n_iter=3, seed=seed, skip_broken=skip_broken).run(x, y)
    _check_feasible(res.x_adv, x, eps)
    assert (res.clean_correct <= res.valid).all()
    for r in res.attacks.values():
        assert (res.correct <= r.correct).all()
        assert (r.correct <= res.clean_correct).all()
    acc = res.acc
    no_valid = res.valid == 0
    assert torch.isnan(acc[no_valid]).all()
    assert not torch.isnan(acc[~no_valid]).any()
