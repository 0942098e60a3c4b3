"""The black-box square attack (mmseg_robust/attacks/square.py)."""
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import HostSyncCounter, apgd, pixel_loss
from mmseg_robust.attacks.square import (QUERIES_PER_ITER, SQUARE_P_INIT,
                                         SQUARE_QUERIES, square_attack,
                                         square_queries, square_side)
from ..tiny_models import PixelNet
from ..tiny_models import correct_pixels as _correct
from ..tiny_models import toy_batch, train_small_segnet

EPS = 8 / 255
pytestmark = pytest.mark.usefixtures('one_thread')


def _fragile(x):
    """Two classes, logits 50 (mean(x) - 0.5) per pixel: images near 0.5
    break completely within a few queries at a large radius."""
    s = 50 * (x.mean(1, keepdim=True) - 0.5)
    return torch.cat([s, -s], 1)


def _fragile_batch():
    g = torch.Generator().manual_seed(0)
    offset = torch.tensor([0.0, 0.03, 0.06]).view(3, 1, 1, 1)
    x = 0.5 + offset + 0.03 * torch.rand(3, 3, 8, 8, generator=g)
    return x, torch.zeros(3, 8, 8, dtype=torch.long)


# -- a literal single-image reference ----------------------------------------
def reference_square(model, x, y, eps, n_queries, seed, p_init=SQUARE_P_INIT):
    """The attack on ONE image, written literally from its docstring: the
    random numbers drawn as the attack draws them for a per-image seed
    (stripe signs, then per proposal the corner and the channel signs)."""
    _, C, H, W = x.shape
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(C * W + (n_queries - 1) * (2 + C), generator=gen)
    stripes = torch.where(u[:C * W] < 0.5, -1.0, 1.0).view(1, C, 1, W)
    draws = u[C * W:].view(n_queries - 1, 2 + C)
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def proj(z):
        return torch.max(torch.min(z, upper), lower)

    def f(z):
        with torch.no_grad():
            logits = model(z)
        obj = pixel_loss('mask_ce', logits, y).mean().item()
        return obj, int(((logits.argmax(1) == y) & (y != 255)).sum())

    x_best = proj(x + eps * stripes)
    f_best, c_best = f(x_best)
    for k in range(n_queries - 1):
        if c_best == 0:
            break
        s = square_side(k, n_queries, p_init, H, W)
        top = min(int(draws[k, 0] * (H - s + 1)), H - s)
        left = min(int(draws[k, 1] * (W - s + 1)), W - s)
        sign = torch.where(draws[k, 2:] < 0.5, -1.0, 1.0).view(1, C, 1, 1)
        x_new = x_best.clone()
        win = (slice(None), slice(None), slice(top,
                                               top + s), slice(left, left + s))
        x_new[win] = proj(x + eps * sign)[win]
        if torch.equal(x_new, x_best):  # nothing changes: the other vertex
            x_new[win] = proj(x - eps * sign)[win]
        f_new, c_new = f(x_new)
        if c_new < c_best or (c_new == c_best and f_new > f_best):
            x_best, f_best, c_best = x_new, f_new, c_new
    return x_best, c_best


@pytest.mark.parametrize('model', ['net', 'fragile'])
def test_batched_square_equals_per_image_reference(net, model):
    """Each image of the batch runs exactly the single-image search: its
    own random squares, acceptances and early stop."""
    if model == 'net':
        x, y = toy_batch(B=3, seed=1, model=net)
        eps, n = 16 / 255, 60
    else:
        net = _fragile
        x, y = _fragile_batch()
        eps, n = 0.3, 400
    seeds = [11, 12, 13]
    res = square_attack(net, x, y, eps, n, seed=seeds)
    if model == 'fragile':  # early stop at different queries
        assert res.correct.tolist() == [0, 0, 0]
        assert len(set(res.n_iter.tolist())) == 3
        assert res.n_iter.max() < n
    for i in range(3):
        xi, yi = x[i:i + 1], y[i:i + 1]
        ref_x, ref_c = reference_square(net, xi, yi, eps, n, seeds[i])
        clean_c = int(_correct(net, xi, yi))
        if clean_c < ref_c:
            ref_x, ref_c = xi, clean_c
        assert int(res.correct[i]) == ref_c, i
        torch.testing.assert_close(res.x_adv[i:i + 1], ref_x)


def test_square_side_schedule():
    """Square Attack's halvings of p scaled to the budget; at least one
    pixel and below the image's shorter side."""
    sides = [square_side(k, 1000, 0.3, 64, 64) for k in range(1000)]
    assert sides[0] == round((0.3 * 64 * 64)**0.5) == 35
    assert sides == sorted(sides, reverse=True)
    assert sides[-1] == round((0.3 / 512 * 64 * 64)**0.5) == 2
    assert square_side(999, 1000, 0.3, 16, 16) == 1  # at least one pixel
    # the schedule scales with the budget
    assert [square_side(10 * k, 10000, 0.3, 64, 64)
            for k in range(1000)] == sides
    assert square_side(0, 10, 1.0, 8, 8) == 7
    assert square_side(0, 10, 1.0, 1, 5) == 1


def test_queries_of_an_iteration_budget():
    assert square_queries(300) == 300 * QUERIES_PER_ITER == 900
    with pytest.raises(ValueError, match='n_iter'):
        square_queries(0)


# -- invariants -------------------------------------------------------------
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    B=st.integers(1, 3),
    H=st.integers(1, 9),
    W=st.integers(2, 9),
    eps=st.sampled_from([0.0, 0.5 / 255, 8 / 255, 64 / 255]),
    loss=st.sampled_from(['mask_ce', 'margin', 'ce', 'js']),
    clean_start=st.booleans())
def test_square_is_feasible_and_not_worse_than_clean(seed, B, H, W, eps, loss,
                                                     clean_start):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, H, W, generator=g)
    x[..., 0, 0] = 0.0  # pixels at the box borders
    x[..., -1, -1] = 1.0
    net = PixelNet(seed=3).eval()
    y = _correct_labels(net, x, g)
    res = square_attack(
        net,
        x,
        y,
        eps,
        12,
        loss=loss,
        seed=seed,
        start=None if clean_start else 'stripes')
    assert res.x_adv.shape == x.shape
    assert (res.x_adv - x).abs().max() <= eps + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    clean = _correct(net, x, y)
    assert (res.correct <= clean).all()
    assert torch.equal(_correct(net, res.x_adv, y), res.correct)
    assert torch.equal(res.valid, (y != 255).flatten(1).sum(1))
    if eps == 0:
        assert torch.equal(res.x_adv, x)
        assert torch.equal(res.correct, clean)


def _correct_labels(net, x, g):
    """The model's predictions with some flipped and some ignored."""
    with torch.no_grad():
        y = net(x).argmax(1)
    flip = torch.rand(y.shape, generator=g) < 0.2
    y = torch.where(flip, (y + 1) % 3, y)
    y[torch.rand(y.shape, generator=g) < 0.1] = 255
    return y


def test_eps_zero_is_clean(net):
    x, y = toy_batch(B=2, seed=2, model=net)
    res = square_attack(net, x, y, 0.0, 50)
    assert torch.equal(res.x_adv, x)
    assert torch.equal(res.pred, net(x).argmax(1))
    assert torch.equal(res.correct, _correct(net, x, y))
    assert res.n_evals == 2  # the clean prediction only


def test_deterministic_per_seed_and_batch_independent(net):
    x, y = toy_batch(B=4, seed=3, model=net)
    a = square_attack(net, x, y, EPS, 40, seed=5)
    b = square_attack(net, x, y, EPS, 40, seed=5)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.correct, b.correct)
    c = square_attack(net, x, y, EPS, 40, seed=6)
    assert not torch.equal(a.x_adv, c.x_adv)
    # one seed per image: an image's run depends on its seed only
    seeds = [3, 1, 4, 1]
    full = square_attack(net, x, y, EPS, 40, seed=seeds)
    part = square_attack(net, x[2:], y[2:], EPS, 40, seed=seeds[2:])
    assert torch.equal(full.x_adv[2:], part.x_adv)
    assert torch.equal(full.correct[2:], part.correct)


def test_mask_is_respected(net):
    x, y = toy_batch(B=2, seed=4, model=net)
    mask = torch.zeros(2, 12, 12, dtype=torch.bool)
    mask[:, 3:9, 2:10] = True
    res = square_attack(net, x, y, 32 / 255, 60, mask=mask)
    moved = (res.x_adv != x).any(1)
    assert moved.any() and not (moved & ~mask).any()


def test_no_gradient_is_used(net):
    """Every model call runs without autograd, on inputs that do not
    require a gradient; a backward pass would raise."""
    calls = []

    class NoGrad(nn.Module):

        def forward(self, x):
            assert not torch.is_grad_enabled() and not x.requires_grad
            calls.append(x.shape[0])
            out = net(x)
            if out.requires_grad:  # never reached: autograd is off
                out.register_hook(lambda g: 1 / 0)
            return out

    x, y = toy_batch(B=2, seed=5, model=net)
    res = square_attack(NoGrad().eval(), x, y, EPS, 30)
    # clean, 30 queries (the start included), the returned points
    assert len(calls) == 32 and res.n_evals == 2 * 32
    assert (res.n_iter <= 30).all()


def test_accepts_only_improvements_and_reports_them(net):
    x, y = toy_batch(B=3, seed=6, model=net)
    res = square_attack(net, x, y, 16 / 255, 50)
    acc = res.extra['accepted']
    assert acc.shape == (3, ) and (acc >= 0).all() and (acc <= 49).all()
    assert res.extra['queries'] == 50 and res.extra['start'] == 'stripes'
    assert torch.isfinite(res.loss).all()


def test_margin_objective(net):
    x, y = toy_batch(B=2, seed=7, model=net)
    res = square_attack(net, x, y, 16 / 255, 40, loss='margin')
    assert (res.loss <= 0).all()  # margins of correct pixels
    assert (res.correct <= _correct(net, x, y)).all()


def test_bad_arguments(net):
    x, y = toy_batch(B=1, seed=8, model=net)
    with pytest.raises(ValueError, match='p_init'):
        square_attack(net, x, y, EPS, 5, p_init=0)
    with pytest.raises(ValueError, match='unknown loss'):
        square_attack(net, x, y, EPS, 5, loss='dice')
    with pytest.raises(ValueError, match='n_queries'):
        square_attack(net, x, y, EPS, 0)
    with pytest.raises(ValueError, match='start'):
        square_attack(net, x, y, EPS, 5, start='noise')
    with pytest.raises(ValueError, match='eps'):
        square_attack(net, x, y, 8, 5)
    with pytest.raises(ValueError, match='targeted'):
        square_attack(net, x, y, EPS, 5, loss='margin', targeted=True)


def test_reduced_precision(net):
    x, y = toy_batch(B=2, seed=9, model=net)
    res = square_attack(net, x, y, EPS, 20, amp='bf16')
    assert res.extra['precision'] == 'bf16'
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    # the returned points are judged in float32
    assert torch.equal(_correct(net, res.x_adv, y), res.correct)


def test_syncs_at_most_once_per_10_queries(net):
    x, y = toy_batch(B=8, H=16, W=16, seed=1, model=net)
    with HostSyncCounter() as c:
        square_attack(net, x, y, EPS, 100, seed=list(range(8)))
    assert c.total / 100 <= 0.1, dict(c.by_op)


# -- strength on a trained model ---------------------------------------------
@pytest.fixture(scope='module')
def trained():
    """A small clean model trained in the test (under a second)."""
    return train_small_segnet(32, 100, 4)


def test_default_budget_lowers_a_trained_models_accuracy(trained):
    """With its default budget the attack breaks a measurable share of the
    pixels of a clean model; the white-box APGD stays ahead (the toy
    classes are far apart in colour: large radii are needed)."""
    model, x, y = trained
    valid = (y != 255).sum().item()
    clean = _correct(model, x, y).sum().item() / valid
    assert clean > 0.97, f'toy model did not train ({clean:.3f})'
    res = square_attack(model, x, y, 24 / 255)
    assert res.extra['queries'] == SQUARE_QUERIES
    acc = res.correct.sum().item() / valid
    assert acc < clean - 0.1, (clean, acc)
    white = apgd(model, x, y, 24 / 255, 30).correct.sum().item() / valid
    assert white <= acc, (white, acc)


def test_square_by_name_in_sea(net):
    """``--attacks square`` / ``square:margin``: SEA runs the square attack
    with SEA's iterations as queries of the same compute, per-image seeds
    (an image's run does not depend on the batch) and a chained radius
    starting from the smaller radius's worst case."""
    from mmseg_robust.attacks import SEA, parse_attack
    assert parse_attack('square') == parse_attack('square').__class__(
        'square', 'square', 'mask_ce')
    assert parse_attack('square:margin').loss == 'margin'
    for bad in ('square:nope', 'square:mask_ce@ce'):
        with pytest.raises(ValueError, match='square'):
            parse_attack(bad)
    x, y = toy_batch(B=3, seed=3, model=net)
    sea = SEA(net, 16 / 255, n_iter=4, attacks=['square', 'square:margin'])
    res = sea.run(x, y, seed=[5, 6, 7])
    assert res.attacks['square'].n_evals > 0
    assert bool((res.correct <= res.clean_correct).all())
    assert float((res.x_adv - x).abs().max()) <= 16 / 255 + 1e-6
    alone = sea.run(x[1:2], y[1:2], seed=[6])
    assert torch.equal(alone.correct, res.correct[1:2])
    curve = sea.curve(x, y, [8 / 255, 16 / 255], seed=[5, 6, 7])
    assert bool((curve[1].correct <= curve[0].correct).all())
