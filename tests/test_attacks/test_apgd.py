"""APGD and red-eps APGD (docs/attacks.md)."""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import (UniformNoise, apgd, apgd_checkpoints,
                                  apgd_red_eps)
from mmseg_robust.attacks import core as core_module
from mmseg_robust.attacks import losses as losses_module
from mmseg_robust.attacks import pixel_loss, red_eps_schedule, start_noise
from mmseg_robust.attacks.core import WorstCase
from ..apgd_reference import reference_apgd, reference_checkpoints
from ..tiny_models import toy_batch

EPS = 4 / 255


@pytest.mark.parametrize('n', [1, 3, 9, 10, 30, 90, 100, 120, 300])
def test_checkpoints_follow_spec(n):
    assert list(apgd_checkpoints(n)) == reference_checkpoints(n)


def test_checkpoints_for_100_iterations():
    assert apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)


@pytest.mark.parametrize('loss,track', [('mask_ce', None), ('bal_ce', None),
                                        ('js', None), ('mask_sph', None),
                                        ('mask_ce', 'mask_ce'), ('js', 'js'),
                                        ('mask_sph', 'ce')])
def test_batched_apgd_equals_per_image_reference(net, loss, track):
    """Each image of a batch runs exactly the single-image APGD of the
    docs: own step size, checkpoints, momentum, best points, early stop,
    with the tracked objective driving the step-size control."""
    x, y = toy_batch(B=3, seed=1, model=net)
    n_iter = 25
    noise = start_noise(x, 7)
    res = apgd(
        net,
        x,
        y,
        EPS,
        n_iter,
        loss=loss,
        start=UniformNoise(noise),
        track_loss=track)
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    x0 = torch.max(torch.min(x + EPS * noise, upper), lower)
    for i in range(3):
        ref_x, ref_c = reference_apgd(
            net,
            x[i:i + 1],
            y[i:i + 1],
            EPS,
            n_iter,
            loss,
            x0[i:i + 1],
            track=track)
        clean_c = int(((net(x[i:i + 1]).argmax(1) == y[i:i + 1]) &
                       (y[i:i + 1] != 255)).sum())
        if clean_c < ref_c:  # the clean image beats the run
            ref_x, ref_c = x[i:i + 1], clean_c
        assert int(res.correct[i]) == ref_c
        torch.testing.assert_close(res.x_adv[i:i + 1], ref_x)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-2, 2)),
        min_size=1,
        max_size=12), st.booleans())
def test_worst_case_breaks_ties_by_score(points, scored):
    """A stream of (correct, score) points for one image: the worst case
    is the first point with the fewest correct pixels and, if it keeps
    scores, among those the first with the highest score."""
    x = torch.zeros(1, 1, 1, 1)
    first_c, first_s = points[0]
    worst = WorstCase(x, torch.zeros(1, 1, 1, dtype=torch.long),
                      torch.tensor([first_c]),
                      torch.tensor([float(first_s)]) if scored else None)
    idx = torch.tensor([0])
    for i, (c, sc) in enumerate(points[1:], 1):
        better = worst.update(idx, torch.full((1, 1, 1, 1), float(i)),
                              torch.full((1, 1, 1), i), torch.tensor([c]),
                              torch.tensor([float(sc)]))
        assert bool(better) == (int(worst.pred) == i)
    if scored:
        key = [(c, -sc, i) for i, (c, sc) in enumerate(points)]
    else:
        key = [(c, i) for i, (c, _) in enumerate(points)]
    expected = min(key)[-1]
    assert int(worst.pred) == expected and float(worst.x) == expected
    assert int(worst.correct) == points[expected][0]


def test_same_seed_bit_identical_and_seed_matters(net):
    x, y = toy_batch(seed=2, model=net)
    a = apgd_red_eps(net, x, y, EPS, 12, loss='js', start=5)
    b = apgd_red_eps(net, x, y, EPS, 12, loss='js', start=5)
    c = apgd_red_eps(net, x, y, EPS, 12, loss='js', start=6)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.pred, b.pred)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_per_image_seeds_make_images_independent_of_the_batch(net):
    x, y = toy_batch(B=3, seed=3, model=net)
    seeds = [11, 12, 13]
    full = apgd(net, x, y, EPS, 15, start=seeds)
    alone = apgd(net, x[1:2], y[1:2], EPS, 15, start=seeds[1:2])
    torch.testing.assert_close(full.x_adv[1:2], alone.x_adv)
    assert int(full.correct[1]) == int(alone.correct[0])


def test_red_eps_schedule():
    assert red_eps_schedule(0.1, 300) == ((0.2, 90), (0.15000000000000002, 90),
                                          (0.1, 120))
    assert [n for _, n in red_eps_schedule(1 / 255, 10)] == [3, 3, 4]
    assert [n for _, n in red_eps_schedule(1 / 255, 3)] == [1, 1, 1]
    with pytest.raises(ValueError, match='>= 3'):
        red_eps_schedule(0.1, 2)


def test_red_eps_chains_three_apgd_runs(net):
    """red-eps = APGD(2 eps, random start) -> project -> APGD(1.5 eps) ->
    project -> APGD(eps), each starting at the previous lowest-acc point."""
    x, y = toy_batch(B=2, seed=4, model=net)
    n_iter = 20
    noise = start_noise(x, 3)
    res = apgd_red_eps(
        net, x, y, EPS, n_iter, loss='mask_ce', start=UniformNoise(noise))
    for i in range(2):
        xi, yi = x[i:i + 1], y[i:i + 1]
        start = None
        for stage, (radius, n) in enumerate(red_eps_schedule(EPS, n_iter)):
            lo, up = (xi - radius).clamp(0, 1), (xi + radius).clamp(0, 1)
            src = xi + radius * noise[i:i + 1] if stage == 0 else start
            x0 = torch.max(torch.min(src, up), lo)
            start, c = reference_apgd(net, xi, yi, radius, n, 'mask_ce', x0)
        clean_c = int(((net(xi).argmax(1) == yi) & (yi != 255)).sum())
        if clean_c < c:
            start, c = xi, clean_c
        assert int(res.correct[i]) == c
        torch.testing.assert_close(res.x_adv[i:i + 1], start)


def test_bal_ce_lambda_restarts_per_red_eps_stage(net, monkeypatch):
    seen = []
    original = core_module.logit_loss

    def spy(*args, step=None, total_steps=None, **kwargs):
        assert args[3] == 'bal_ce'
        seen.append((step, total_steps))
        return original(*args, step=step, total_steps=total_steps, **kwargs)

    # the attacks evaluate bal_ce in closed form (mmseg_robust.attacks.
    # logit_grads)
    monkeypatch.setattr(core_module, 'logit_loss', spy)
    x, y = toy_batch(B=1, seed=5, model=net)
    apgd_red_eps(net, x, y, 16 / 255, 10, loss='bal_ce', early_stop=False)
    # three runs of 3, 3, 4 iterations: start point + one eval per step
    assert seen == ([(1, 3), (2, 3), (3, 3), (3, 3)] * 2 + [(1, 4), (2, 4),
                                                            (3, 4), (4, 4),
                                                            (4, 4)])


def test_eps_zero_returns_clean_image(net):
    x, y = toy_batch(seed=6, model=net)
    for attack in (apgd, apgd_red_eps):
        res = attack(net, x, y, 0.0, 6)
        assert torch.equal(res.x_adv, x)
        assert torch.equal(res.correct, res.valid)


def test_output_in_ball_and_range(net):
    x, y = toy_batch(seed=7, model=net)
    x[0, :, :3, :3] = 0.0
    x[1, :, :3, :3] = 1.0
    for attack in (apgd, apgd_red_eps):
        res = attack(net, x, y, 8 / 255, 9)
        assert (res.x_adv - x).abs().max() <= 8 / 255 + 1e-6
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_mask_pins_pixels(net):
    x, y = toy_batch(seed=8, model=net)
    mask = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool)
    mask[:, :, -4:] = False
    res = apgd(net, x, y, 8 / 255, 8, mask=mask)
    assert torch.equal(res.x_adv[..., -4:], x[..., -4:])
    assert (res.x_adv[..., :-4] != x[..., :-4]).any()


def test_attack_lowers_accuracy_and_reports_it(net):
    x, y = toy_batch(B=2, seed=9, model=net)
    res = apgd(net, x, y, 16 / 255, 20)
    acc = res.acc
    assert (acc < 1).all()
    with torch.no_grad():
        pred = net(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred)
    valid = y != 255
    assert torch.equal(((pred == y) & valid).flatten(1).sum(1), res.correct)


def test_early_stop_and_skipping_broken_images(net):
    x, y = toy_batch(B=2, seed=10, model=net)
    y[1] = (y[1] + 1) % 3  # image 1 is already completely wrong
    res = apgd(net, x, y, 8 / 255, 10)
    assert res.n_iter[1] == 0 and int(res.correct[1]) == 0
    assert torch.equal(res.x_adv[1], x[1])


def test_no_valid_pixels_is_handled(net):
    x, y = toy_batch(B=2, seed=11, model=net)
    y[0] = 255
    res = apgd_red_eps(net, x, y, 8 / 255, 6)
    assert int(res.valid[0]) == 0 and torch.isnan(res.acc[0])
    assert not torch.isnan(res.acc[1])
    assert torch.equal(res.x_adv[0], x[0])


def test_no_weight_gradients(net):
    x, y = toy_batch(seed=12, model=net)
    for p in net.parameters():
        p.grad = None
    apgd(net, x, y, EPS, 5)
    assert all(p.grad is None for p in net.parameters())


def test_targeted_attack_reaches_target(net):
    x, y = toy_batch(B=2, seed=13, model=net, ignore_some=False)
    # the least frequent class the model predicts somewhere
    counts = torch.bincount(y.flatten(), minlength=3)
    t = int(torch.where(counts > 0, counts, counts.max() + 1).argmin())
    target = torch.full_like(y, t)
    res = apgd(net, x, target, 32 / 255, 30, loss='ce', targeted=True)
    hit = (res.pred == t).float().mean()
    clean_hit = (y == t).float().mean()
    assert hit > clean_hit + 0.1
    # "correct" counts pixels not yet of the target class
    assert torch.equal(res.correct, (res.pred != t).flatten(1).sum(1))
    with pytest.raises(ValueError, match="loss='ce'"):
        apgd(net, x, target, EPS, 3, loss='js', targeted=True)


def test_amp_runs_and_keeps_invariants(net):
    x, y = toy_batch(seed=14, model=net)
    res = apgd(net, x, y, EPS, 5, amp=True)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    assert res.x_adv.dtype == torch.float32


class TestBadInput:

    def test_eps(self, net):
        x, y = toy_batch(model=net)
        for eps in (-0.1, float('nan'), 8.0):
            with pytest.raises(ValueError, match='8/255'):
                apgd(net, x, y, eps, 3)
        with pytest.raises(TypeError, match='8/255'):
            apgd(net, x, y, 'big', 3)

    def test_n_iter(self, net):
        x, y = toy_batch(model=net)
        with pytest.raises(ValueError, match='n_iter >= 3'):
            apgd_red_eps(net, x, y, EPS, 2)
        with pytest.raises(ValueError, match='integer >= 1'):
            apgd(net, x, y, EPS, 0)

    def test_loss_name(self, net):
        x, y = toy_batch(model=net)
        with pytest.raises(ValueError, match='valid names are'):
            apgd(net, x, y, EPS, 3, loss='focal')

    def test_shapes(self, net):
        x, y = toy_batch(model=net)
        with pytest.raises(ValueError, match=r'y must be a \(B, H, W\)'):
            apgd(net, x, y[:1], EPS, 3)
        with pytest.raises(ValueError, match='logits must be'):
            apgd(net, x, y[:, :-1], EPS, 3)
        with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
            apgd(net, x[0], y, EPS, 3)

    def test_image_range_and_dtype(self, net):
        x, y = toy_batch(model=net)
        with pytest.raises(ValueError, match='divided by 255'):
            apgd(net, x * 255, y, EPS, 3)
        with pytest.raises(TypeError, match='float'):
            apgd(net, (x * 255).byte(), y, EPS, 3)

    def test_labels_out_of_range(self, net):
        x, y = toy_batch(model=net)
        y[1, 3, 3] = 9
        with pytest.raises(ValueError, match=r'\[9\]'):
            apgd(net, x, y, EPS, 3)

    @pytest.mark.parametrize(
        'value, where',
        [
            (float('nan'), (1, slice(None), slice(None), slice(None))),
            # one pixel of one class of image 2 (its sum is then inf)
            (float('inf'), (2, 0, 1, 1)),
        ])
    def test_nan_logits_name_the_image(self, net, value, where):
        x, y = toy_batch(model=net)

        def broken(z):
            out = net(z).clone()
            out[where] = value
            return out

        with pytest.raises(
                FloatingPointError, match=rf'position\(s\) \[{where[0]}\]'):
            apgd(broken, x, y, EPS, 3)

    def test_huge_finite_logits_are_not_an_error(self, net):
        # their per-image sum overflows float32; the exact check clears it
        x, y = toy_batch(model=net)

        def huge(z):
            out = net(z)
            return out + 1e38 * (out > out.mean()).float()

        res = apgd(huge, x, y, EPS, 3)
        assert torch.isfinite(res.x_adv).all()
        assert (res.correct <= res.valid).all()

    def test_training_mode_warns(self, net):
        x, y = toy_batch(model=net)
        net.train()
        try:
            with pytest.warns(UserWarning, match='training mode'):
                apgd(net, x, y, EPS, 2)
        finally:
            net.eval()

    def test_zero_gradient_warns(self, net):
        x, y = toy_batch(model=net)

        def masked(z):  # gradient does not flow to the input
            return net(z.detach()) + 0 * z.sum()

        with pytest.warns(UserWarning, match='gradient masking'):
            apgd(masked, x, y, EPS, 2)

    def test_expanded_zero_gradient_is_not_written_in_place(self, net):
        """autograd returns an expanded (stride-0) zero gradient here; the
        step-size restarts must not write into it."""
        x, y = toy_batch(model=net)

        def masked(z):
            return net(z.detach()) + 0 * z.sum()

        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*gradient masking.*')
            warnings.filterwarnings('error', message='.*expanded tensors.*')
            res = apgd(masked, x, y, EPS, 20, start=None)
        # no usable gradient: sign(0) = 0 steps keep the clean images
        assert torch.equal(res.x_adv, x)

    def test_ok_model_gives_no_warning(self, net):
        x, y = toy_batch(model=net)
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            apgd(net, x, y, EPS, 3)


def test_loss_module_is_plain_torch():
    """The attack core imports no MMSeg/MMEngine."""
    import inspect

    import mmseg_robust.attacks as attacks
    pkg_dir = inspect.getfile(attacks).rsplit('/', 1)[0]
    import pathlib
    for path in pathlib.Path(pkg_dir).glob('*.py'):
        text = path.read_text()
        assert 'import mmseg' not in text and 'from mmseg' not in text, path
        assert 'mmengine' not in text and 'mmcv' not in text, path
    assert pixel_loss is losses_module.pixel_loss


def test_default_tracked_objective_is_the_specs(net):
    """The documented defaults (docs/attacks.md): CE for mask_ce / bal_ce /
    js / mask_ce_bal, the
    loss itself for mask_sph; ``track_loss=None`` means the default."""
    from mmseg_robust.attacks import TRACKED_DEFAULTS, default_tracked
    from ..apgd_reference import SPEC_TRACKED
    assert TRACKED_DEFAULTS == SPEC_TRACKED
    assert default_tracked('mask_sph') == 'mask_sph'
    x, y = toy_batch(B=2, seed=11, model=net)
    for loss, track in (('mask_ce', 'ce'), ('mask_sph', 'mask_sph')):
        a = apgd(net, x, y, EPS, 12, loss=loss, start=1)
        b = apgd(net, x, y, EPS, 12, loss=loss, start=1, track_loss=track)
        assert torch.equal(a.x_adv, b.x_adv)
    with pytest.raises(ValueError, match='valid names'):
        apgd(net, x, y, EPS, 3, loss='mask_ce', track_loss='hinge')


def test_tracking_changes_the_run_and_reports_the_tracked_best(net):
    x, y = toy_batch(B=3, seed=12, model=net)
    own = apgd(
        net,
        x,
        y,
        8 / 255,
        20,
        loss='mask_ce',
        start=2,
        track_loss='mask_ce',
        early_stop=False)
    ce = apgd(
        net, x, y, 8 / 255, 20, loss='mask_ce', start=2, early_stop=False)
    assert not torch.equal(own.x_adv, ce.x_adv)
    # AttackResult.loss is the best tracked objective: CE is >= mask_ce
    assert (ce.loss >= own.loss - 1e-6).all()


def test_start_forms_and_deprecated_keywords(net):
    """``start``: a seed, None (the clean image), UniformNoise or points;
    the keywords of earlier releases give the same runs, with a warning."""
    x, y = toy_batch(B=2, seed=13, model=net)
    noise = start_noise(x, 4)
    by_seed = apgd(net, x, y, EPS, 8, start=4)
    by_noise = apgd(net, x, y, EPS, 8, start=UniformNoise(noise))
    assert torch.equal(by_seed.x_adv, by_noise.x_adv)
    points = (x + EPS * noise).clamp(0, 1)
    by_points = apgd(net, x, y, EPS, 8, start=points)
    assert torch.equal(by_seed.x_adv, by_points.x_adv)
    for old, new in ((dict(seed=4), dict(start=4)), (dict(random_start=False),
                                                     dict(start=None)),
                     (dict(noise=noise), dict(start=UniformNoise(noise))),
                     (dict(x_init=points), dict(start=points))):
        with pytest.warns(DeprecationWarning, match='use start='):
            a = apgd_red_eps(net, x, y, EPS, 6, **old)
        b = apgd_red_eps(net, x, y, EPS, 6, **new)
        assert torch.equal(a.x_adv, b.x_adv), old
    with pytest.raises(TypeError, match='not also'):
        apgd(net, x, y, EPS, 3, start=1, seed=2)
    with pytest.raises(TypeError, match='unexpected keyword'):
        apgd(net, x, y, EPS, 3, sed=2)
