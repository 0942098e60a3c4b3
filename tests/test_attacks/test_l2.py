"""The l2 threat model (issue #21, item 3) and expectation over
transformation: the l2 ball, l2 APGD / red-eps / PGD and SEA as property
tests, against straightforward re-derivations, and on a trained model."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import (L2_PGD_STEP_RATIO, SEA, Ball, apgd,
                                  apgd_red_eps, check_radius, pgd,
                                  pgd_step_size, pgd_train)
from mmseg_robust.attacks.core import Objective
from ..tiny_models import PixelNet, toy_batch, train_small_segnet

NET = PixelNet(seed=3).eval()
SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-5


def _fragile(x):
    return 40 * (x - 0.5)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    B, H, W = draw(st.integers(1, 3)), draw(st.integers(4, 8)), \
        draw(st.integers(4, 8))
    x = torch.rand(B, 3, H, W, generator=g)
    x[..., 0, 0] = 0.0  # pixels at the borders of [0, 1]
    x[..., -1, -1] = 1.0
    model = draw(st.sampled_from([NET, _fragile]))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[torch.rand(B, H, W, generator=g) < 0.2] = 255
    eps = draw(st.sampled_from([0.0, 0.05, 0.3, 2.0]))
    return model, x, y, eps, seed


def _l2(x_adv, x):
    return (x_adv - x).flatten(1).norm(dim=1)


def _check_feasible(x_adv, x, eps):
    assert x_adv.shape == x.shape
    assert (_l2(x_adv, x) <= eps * (1 + TOL) + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if eps == 0:
        assert torch.equal(x_adv, x)


def _correct(model, x, y):
    with torch.no_grad():
        return ((model(x).argmax(1) == y) & (y != 255)).flatten(1).sum(1)


# --- the ball -------------------------------------------------------------


def test_l2_projection_matches_a_re_derivation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 6, generator=g)
    z = x + torch.randn(
        x.shape, generator=g) * torch.tensor([0.001, 0.1, 1.0, 10.0]).view(
            -1, 1, 1, 1)
    ball = Ball(x, 0.5, norm='l2')
    got = ball.project(z)
    for i in range(4):
        d = z[i] - x[i]
        n = float(d.norm())
        want = (x[i] + d * min(1.0, 0.5 / n)).clamp(0, 1)
        assert torch.allclose(got[i], want, atol=1e-6)
    assert (_l2(got, x) <= 0.5 * (1 + TOL)).all()
    # a point inside both the ball and [0, 1] stays where it is
    inside = (x + (z - x) * 0.001).clamp(0, 1)
    assert torch.allclose(ball.project(inside), inside, atol=1e-7)


def test_l2_ascent_is_the_normalised_gradient_and_respects_the_mask():
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(3, 3, 4, 4, generator=g)
    grad[2] = 0
    mask = torch.ones(3, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0, :] = False
    ball = Ball(torch.rand(3, 3, 4, 4, generator=g), 1.0, mask, norm='l2')
    d = ball.ascent(grad * 7.0)  # a positive factor changes nothing
    assert torch.allclose(d.flatten(1)[:2].norm(dim=1), torch.ones(2))
    assert torch.equal(d[2], torch.zeros_like(d[2]))
    assert (d[:, :, 0, :] == 0).all()
    want = torch.where(mask, grad, 0.0)[0]
    assert torch.allclose(d[0], want / want.norm(), atol=1e-6)
    # l_inf keeps the sign step
    assert torch.equal(Ball(ball.x, 0.1).ascent(grad), grad.sign())


def test_l2_random_start_is_on_the_sphere_inside_the_box():
    x = torch.full((2, 3, 6, 6), 0.5)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    start = Ball(x, 0.4, norm='l2').random_point(noise * 2 - 1)
    assert torch.allclose(_l2(start, x), torch.full((2, ), 0.4))


def test_radius_checks_per_norm():
    assert check_radius(3.0, 'l2') == 3.0  # l2 radii may exceed 1
    with pytest.raises(ValueError, match='l_inf radius'):
        check_radius(3.0, 'linf')
    with pytest.raises(ValueError, match='not a valid l2 radius'):
        check_radius(-0.1, 'l2')
    with pytest.raises(ValueError, match="norm must be one of"):
        apgd(NET, *toy_batch(), 0.1, 2, norm='l1')
    with pytest.raises(ValueError, match='l_inf attacks'):
        SEA(NET, 0.5, norm='l2', attacks=['mask_ce', 'square'])
    with pytest.raises(ValueError, match='l_inf attacks'):
        SEA(NET, 0.5, norm='l2', attacks=['padam:ce'])
    assert pgd_step_size(0.5, 'l2') == pytest.approx(L2_PGD_STEP_RATIO * .5)


# --- property tests -------------------------------------------------------


@SETTINGS
@given(problems(), st.sampled_from(['mask_ce', 'js', 'cos', 'mask_sph']),
       st.integers(3, 6))
def test_l2_apgd_is_feasible_and_not_worse_than_clean(problem, loss, n_iter):
    model, x, y, eps, seed = problem
    clean = _correct(model, x, y)
    for attack in (apgd, apgd_red_eps):
        res = attack(
            model, x, y, eps, n_iter, loss=loss, start=seed, norm='l2')
        _check_feasible(res.x_adv, x, eps)
        assert (res.correct <= clean).all()
        assert torch.equal(_correct(model, res.x_adv, y), res.correct)


@SETTINGS
@given(problems(), st.sampled_from(['ce', 'bal_ce', 'cossim_ce']),
       st.booleans())
def test_l2_pgd_and_pgd_train_are_feasible(problem, loss, random_start):
    model, x, y, eps, seed = problem
    start = seed if random_start else None
    res = pgd(model, x, y, eps, 4, loss=loss, start=start, norm='l2')
    _check_feasible(res.x_adv, x, eps)
    x_adv, _ = pgd_train(model, x, y, eps, 3, start=start, norm='l2')
    _check_feasible(x_adv, x, eps)


@SETTINGS
@given(problems())
def test_l2_sea_worst_below_each_attack_below_clean(problem):
    model, x, y, eps, seed = problem
    res = SEA(model, eps, n_iter=3, seed=seed, norm='l2').run(x, y)
    _check_feasible(res.x_adv, x, eps)
    for r in res.attacks.values():
        assert (res.correct <= r.correct).all()
        assert (r.correct <= res.clean_correct).all()
    assert torch.equal(_correct(model, res.x_adv, y), res.correct)


def test_l2_perturbation_respects_the_mask():
    x, y = toy_batch(B=2, H=8, W=8)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    for attack in (apgd, apgd_red_eps, pgd):
        res = attack(_fragile, x, y, 1.0, 4, mask=mask, norm='l2', start=0)
        moved = (res.x_adv != x).any(1)
        assert not moved[~mask].any()
        _check_feasible(res.x_adv, x, 1.0)


def test_l2_sea_curve_is_monotone_and_deterministic():
    model, x, y = train_small_segnet(48, 60, 4)
    radii = [0.0, 0.25, 0.5, 1.0]
    sea = SEA(model, 0.5, n_iter=6, norm='l2', seed=3)
    first = sea.curve(x, y, radii)
    correct = torch.stack([r.correct for r in first])
    assert (correct[1:] <= correct[:-1]).all()
    assert torch.equal(correct[0], first[0].clean_correct)
    for r, eps in zip(first, radii):
        _check_feasible(r.x_adv, x, eps)
    again = SEA(model, 0.5, n_iter=6, norm='l2', seed=3).curve(x, y, radii)
    for a, b in zip(first, again):
        assert torch.equal(a.x_adv, b.x_adv)
        assert torch.equal(a.correct, b.correct)
    assert 'SEA-R1 (l2)' in sea.describe()


def test_l2_apgd_breaks_a_trained_model_and_beats_l2_pgd():
    """A radius of 6 is an RMS change of 0.14 per value of a 3x24x24 image
    (this toy model holds 92% accuracy at l_inf 16/255): APGD-l2 must drop
    accuracy a lot and be at least as strong as the fixed-step baseline at
    equal iterations (measured 23% vs 78% of the pixels correct)."""
    model, x, y = train_small_segnet(48, 60, 6)
    clean = _correct(model, x, y).sum()
    a = apgd(model, x, y, 6.0, 20, norm='l2').correct.sum()
    p = pgd(model, x, y, 6.0, 20, norm='l2').correct.sum()
    assert a < 0.5 * clean
    assert a <= p


# --- expectation over transformation --------------------------------------


class _Flip(torch.nn.Module):
    """A randomised model: the input is mirrored at random."""

    def __init__(self):
        super().__init__()
        self.net = PixelNet(seed=5)

    def forward(self, x):
        if torch.rand(()) < 0.5:
            return self.net(x.flip(-1)).flip(-1)
        return self.net(x)


def test_eot_averages_the_gradients_of_its_samples():
    model = _Flip().eval()
    x, y = toy_batch(B=2, H=6, W=6)
    torch.manual_seed(7)
    ev = Objective(model, y, loss='mask_ce', eot=4).evaluate(x)
    torch.manual_seed(7)
    one = Objective(model, y, loss='mask_ce')
    samples = [one.evaluate(x) for _ in range(4)]
    assert torch.allclose(ev.grad, sum(s.grad for s in samples) / 4)
    assert torch.allclose(ev.loss, sum(s.loss for s in samples) / 4)
    want = (sum(s.correct for s in samples).double() / 4).round().long()
    assert torch.equal(ev.correct, want)


def test_eot_on_a_deterministic_model_changes_nothing_but_the_cost():
    x, y = toy_batch()
    one = apgd(NET, x, y, 8 / 255, 5)
    four = apgd(NET, x, y, 8 / 255, 5, eot=4)
    assert torch.allclose(one.x_adv, four.x_adv, atol=1e-6)
    assert torch.equal(one.correct, four.correct)
    clean_evals = 2 * x.shape[0]  # the clean and the final predictions
    assert four.n_evals - clean_evals == 4 * (one.n_evals - clean_evals)
    res = SEA(NET, 8 / 255, n_iter=3, eot=2, attacks=['mask_ce', 'pgd'])
    assert res.eot == 2
    with pytest.raises(ValueError, match='eot must be an integer'):
        apgd(NET, x, y, 8 / 255, 5, eot=0)


class _Alternating(torch.nn.Module):
    """A randomised model in its simplest form: every other call its logits
    are 300 times larger (confident, tiny CE gradient)."""

    def __init__(self):
        super().__init__()
        self.net = PixelNet(seed=6)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x) * (300.0 if self.calls % 2 else 1.0)


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(
        a.flatten(1).double(), b.flatten(1).double(), dim=1)


def test_eot_under_reduced_precision_averages_like_float32():
    """Under bf16 each sample's gradient is scaled by its own power of two
    (docs/attacks.md, "Precision"); EOT brings them to a common one before
    averaging, so the mean follows float32's mean (measured cosine >=
    0.997; without it the confident sample's tiny gradient weighed as much
    as the other's: 0.76-0.96)."""
    x, _ = toy_batch(B=3, H=8, W=8, ignore_some=False)
    with torch.no_grad():  # labels it predicts: confident pixels
        y = _Alternating().net(x).argmax(1)
    grads = {}
    for amp in (False, 'bf16'):
        model = _Alternating().eval()
        grads[amp] = Objective(
            model, y, loss='ce', eot=2, amp=amp).evaluate(x).grad
    assert (_cos(grads[False], grads['bf16']) > 0.99).all()


def test_l2_direction_of_a_tiny_gradient_is_a_unit_vector():
    """Entries of 1e-24 square to 0 in float32: the direction is computed
    from the gradient divided by its largest entry."""
    grad = torch.full((2, 3, 8, 8), 1e-24)
    grad[1] = 0
    d = Ball(torch.rand(2, 3, 8, 8), 1.0, norm='l2').ascent(grad)
    assert d[0].norm() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(d[1], torch.zeros_like(d[1]))


def test_linf_only_attacks_say_so_and_eot_accepts_integer_likes():
    from mmseg_robust.attacks import padam, square_attack
    x, y = toy_batch()
    with pytest.raises(ValueError, match='PAdam is an l_inf attack'):
        padam(NET, x, y, 0.5, 2, norm='l2')
    with pytest.raises(ValueError, match='the square attack is an l_inf'):
        square_attack(NET, x, y, 0.5, n_queries=2, norm='l2')
    import numpy as np
    assert SEA(NET, 4 / 255, eot=np.int64(2)).eot == 2
    with pytest.raises(ValueError, match='eot must be an integer'):
        SEA(NET, 4 / 255, eot=1.5)
