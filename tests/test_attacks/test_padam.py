"""PAdam and the cosine loss (docs/attacks.md, "PAdam")."""
import math
import sys

import pytest
import torch

from mmseg_robust.attacks import (PADAM_LR, SEA, AttackSpec, HostSyncCounter,
                                  UniformNoise, derive_seed, padam,
                                  parse_attack, pixel_loss, run_attack,
                                  start_noise)
from ..tiny_models import correct_pixels as _correct
from ..tiny_models import toy_batch

EPS = 8 / 255
pytestmark = pytest.mark.usefixtures('one_thread')


# -- the cosine loss ---------------------------------------------------------
def _cos_direct(u, y):
    """``1 - p_y / ||p||_2`` per pixel from the softmax, literally
    (float64)."""
    p = torch.softmax(u.double(), 1)
    p_y = p.gather(1, y.clamp(0, u.shape[1] - 1).unsqueeze(1)).squeeze(1)
    return (1 - p_y / p.norm(dim=1)) * (y != 255)


def test_cos_loss_matches_softmax_cosine_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 5, 4, 6, generator=g) * 3
    y = torch.randint(0, 5, (2, 4, 6), generator=g)
    y[0, 0, :3] = 255
    x = u.clone().requires_grad_(True)
    out = pixel_loss('cos', x, y)
    ref_x = u.double().requires_grad_(True)
    ref = _cos_direct(ref_x, y)
    assert out.dtype == torch.float32 and out.shape == y.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    assert (out[y == 255] == 0).all()
    assert ((out >= 0) & (out < 1)).all()
    grad, = torch.autograd.grad(out.sum(), x)
    ref_grad, = torch.autograd.grad(ref.sum(), ref_x)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)
    assert (grad.abs().sum(1)[y == 255] == 0).all()


def _cos_high_precision(u, y):
    """``1 - cos(softmax(u), e_y)`` with 60 significant digits (mpmath,
    which ships with torch's sympy)."""
    import mpmath
    with mpmath.workdps(60):
        u = [mpmath.mpf(float(v)) for v in u]
        e = [mpmath.e**(v - max(u)) for v in u]
        p = [v / sum(e) for v in e]
        return float(1 - p[y] / mpmath.sqrt(sum(q * q for q in p)))


@pytest.mark.parametrize('margin', [0, 5, 9, 15, 25, 40, -3, -12])
def test_cos_loss_keeps_value_and_gradient_on_confident_pixels(margin):
    """Beyond a logit margin of ~8 the direct form rounds to 0 in float32
    (zero gradient); the loss keeps its value (60-digit reference) and a
    non-zero gradient up to margins of ~45."""
    u = torch.tensor([0.5 + margin, 0.5, -1.0, 0.0])
    x = u.view(1, 4, 1, 1).clone().requires_grad_(True)
    out = pixel_loss('cos', x, torch.zeros(1, 1, 1, dtype=torch.long))
    out.sum().backward()
    ref = _cos_high_precision(u.tolist(), 0)
    assert out.item() == pytest.approx(ref, rel=1e-5)
    assert (x.grad != 0).all()
    if margin >= 9:  # what the direct form gives in float32
        p = torch.softmax(u, 0)
        assert (1 - p[0] / p.norm()).item() == 0


def test_cos_loss_single_class_is_zero():
    out = pixel_loss('cos', torch.randn(1, 1, 2, 2),
                     torch.zeros(1, 2, 2, dtype=torch.long))
    assert (out == 0).all()


# -- PAdam: a literal single-image reference ---------------------------------
def reference_padam(model, x, y, eps, n_iter, loss, x0, lr=PADAM_LR):
    """PAdam on ONE image, written literally from docs/attacks.md: AMSGrad
    ascent on the input gradient divided by the largest entry of the first
    one, projection onto the box, the lowest-accuracy iterate, stop once no
    pixel is correct."""
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    lower = (x - eps).clamp(0, 1)
    upper = (x + eps).clamp(0, 1)

    def evaluate(z, t):
        z = z.clone().requires_grad_(True)
        logits = model(z).float()
        objective = pixel_loss(
            loss, logits, y, step=t, total_steps=n_iter).flatten(1).mean(1)
        grad, = torch.autograd.grad(objective.sum(), z)
        correct = int(((logits.argmax(1) == y) & (y != 255)).sum())
        return grad, correct

    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    v_hat = torch.zeros_like(x)
    xk = x0.clone()
    grad, c = evaluate(xk, 1)
    top = grad.abs().max()  # the scale of the image's gradients
    x_low, c_low = xk.clone(), c
    for t in range(1, n_iter + 1):
        if c_low == 0:
            break
        g = grad / top
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_hat = torch.maximum(v_hat, v)
        m_hat = m / (1 - b1**t)
        step = lr * m_hat / (torch.sqrt(v_hat / (1 - b2**t)) + adam_eps)
        xk = torch.max(torch.min(xk + step, upper), lower)
        grad, c = evaluate(xk, min(t + 1, n_iter))
        if c < c_low:
            x_low, c_low = xk.clone(), c
    return x_low, c_low


def _fragile(x):
    """Two classes, logits 50 (mean(x) - 0.5) per pixel: images near 0.5
    break completely within a few steps at a large radius."""
    s = 50 * (x.mean(1, keepdim=True) - 0.5)
    return torch.cat([s, -s], 1)


def _fragile_batch():
    """Three images of class 0 at different distances from the boundary
    (they break at different iterations)."""
    g = torch.Generator().manual_seed(0)
    offset = torch.tensor([0.01, 0.06, 0.12]).view(3, 1, 1, 1)
    x = 0.5 + offset + 0.03 * torch.rand(3, 3, 8, 8, generator=g)
    return x, torch.zeros(3, 8, 8, dtype=torch.long)


@pytest.mark.parametrize('model,loss,eps', [('net', 'ce', EPS),
                                            ('net', 'cos', EPS),
                                            ('net', 'bal_ce', 40 / 255),
                                            ('fragile', 'ce', 0.2),
                                            ('fragile', 'cos', 0.2)])
def test_batched_padam_equals_per_image_reference(net, model, loss, eps):
    """Each image of the batch runs exactly the single-image PAdam: its own
    Adam state, lowest-accuracy point and early stop (the fragile model's
    images break at different iterations)."""
    if model == 'net':
        x, y = toy_batch(B=3, seed=1, model=net)
    else:
        net = _fragile
        x, y = _fragile_batch()
    n_iter = 30
    # the fragile model's images start at the clean image
    noise = start_noise(x, 7) if model == 'net' else torch.zeros_like(x)
    res = padam(net, x, y, eps, n_iter, loss=loss, start=UniformNoise(noise))
    if model == 'fragile':  # early stop at different iterations
        assert res.correct.tolist() == [0, 0, 0]
        assert len(set(res.n_iter.tolist())) == 3
        assert res.n_iter.max() < n_iter
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    x0 = torch.max(torch.min(x + eps * noise, upper), lower)
    for i in range(3):
        xi, yi = x[i:i + 1], y[i:i + 1]
        ref_x, ref_c = reference_padam(net, xi, yi, eps, n_iter, loss,
                                       x0[i:i + 1])
        clean_c = int(_correct(net, xi, yi))
        if clean_c < ref_c:
            ref_x, ref_c = xi, clean_c
        assert int(res.correct[i]) == ref_c, i
        # the fragile model's CE margins reach 13: 1 - p_y ~ 2e-6, which the
        # reference's autograd rounds (p_y - 1 in float32, ~3%) and the
        # attack's closed-form gradient does not (docs/attacks.md, "Closed-
        # form logit gradients"); Adam's steps follow the magnitudes
        fragile_ce = (model, loss) == ('fragile', 'ce')
        tol = dict(atol=2e-4, rtol=0) if fragile_ce else {}
        torch.testing.assert_close(res.x_adv[i:i + 1], ref_x, **tol)


def test_padam_matches_torch_amsgrad(net):
    """The update is torch.optim.Adam(amsgrad=True, maximize=True) on the
    perturbation, as Halmosi et al. run it (the gradient divided by a
    constant, the first one's largest entry): without early stop the last
    iterate is that of their loop."""
    x, y = toy_batch(B=1, seed=5, model=net)
    n_iter = 12
    noise = start_noise(x, 3)
    lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    delta = (torch.max(torch.min(x + EPS * noise, upper), lower) - x)
    adam = torch.optim.Adam([delta],
                            lr=PADAM_LR,
                            amsgrad=True,
                            maximize=True,
                            foreach=False)
    scale = None
    for t in range(n_iter):
        z = (x + delta).detach().requires_grad_(True)
        objective = pixel_loss('ce', net(z), y).flatten(1).mean(1)
        grad, = torch.autograd.grad(objective.sum(), z)
        scale = grad.abs().max() if scale is None else scale
        delta.grad = grad / scale
        adam.step()
        with torch.no_grad():
            delta.copy_(torch.max(torch.min(x + delta, upper), lower) - x)
    theirs = x + delta.detach()
    # ours: the last iterate is the returned point if it is the worst;
    # compare iterates through a model that records its inputs
    seen = []

    def recording(z):
        seen.append(z.detach().clone())
        return net(z)

    padam(
        recording,
        x,
        y,
        EPS,
        n_iter,
        start=UniformNoise(noise),
        early_stop=False)
    # calls: clean, n_iter + 1 iterates, the returned point
    last = seen[1 + n_iter]
    torch.testing.assert_close(last, theirs, rtol=0, atol=1e-6)


# -- invariants ---------------------------------------------------------------
@pytest.mark.parametrize('loss', ['ce', 'cos'])
def test_feasible_and_never_worse_than_clean(net, loss):
    x, y = toy_batch(B=4, seed=2, model=net)
    x[0, :, :3] = 0.0
    x[1, :, :3] = 1.0  # clipping at both ends
    mask = torch.ones(4, 12, 12, dtype=torch.bool)
    mask[:, :, :2] = False
    eps = 16 / 255
    res = padam(net, x, y, eps, 15, loss=loss, mask=mask, start=[1, 2, 3, 4])
    assert (res.x_adv - x).abs().max() <= eps + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(res.x_adv[:, :, :, :2], x[:, :, :, :2])
    clean = _correct(net, x, y)
    assert (res.correct <= clean).all()
    # the reported predictions are those of the returned points
    torch.testing.assert_close(res.correct, _correct(net, res.x_adv, y))
    assert res.n_evals > 0 and res.extra['precision'] == 'fp32'


def test_eps_zero_returns_the_clean_image(net):
    x, y = toy_batch(B=2, seed=3, model=net)
    res = padam(net, x, y, 0.0, 10)
    assert torch.equal(res.x_adv, x)
    assert torch.equal(res.correct, _correct(net, x, y))
    assert (res.n_iter == 0).all()


def test_same_seed_bit_identical_and_seed_matters(net):
    x, y = toy_batch(B=2, seed=4, model=net)
    a = padam(net, x, y, EPS, 10, loss='cos', start=5)
    b = padam(net, x, y, EPS, 10, loss='cos', start=5)
    c = padam(net, x, y, EPS, 10, loss='cos', start=6)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.pred, b.pred)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_early_stop_per_image():
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.rand(3, 3, 8, 8, generator=g)  # class 0
    y = torch.zeros(3, 8, 8, dtype=torch.long)
    y[2] = 1  # image 2 is already wrong everywhere: not attacked
    n_iter = 40
    res = padam(_fragile, x, y, 0.2, n_iter, start=None)
    assert res.correct.tolist() == [0, 0, 0]
    assert res.n_iter[2] == 0
    assert 0 < int(res.n_iter[0]) < n_iter and 0 < int(res.n_iter[1]) < n_iter
    # without early stop every image with valid pixels runs all iterations
    full = padam(_fragile, x, y, 0.2, n_iter, start=None, early_stop=False)
    assert full.n_iter.tolist() == [n_iter] * 3
    assert full.correct.tolist() == [0, 0, 0]


@pytest.mark.parametrize('loss', ['ce', 'cos'])
def test_padam_reduces_accuracy_measurably(net, loss):
    """On the tiny model PAdam removes several points of accuracy, more
    than its random start does."""
    x, y = toy_batch(B=4, H=16, W=16, seed=1, model=net)
    valid = (y != 255).flatten(1).sum(1).double()
    clean = _correct(net, x, y) / valid
    noise = start_noise(x, 0)
    start = x + EPS * noise
    at_start = _correct(net, start.clamp(0, 1), y) / valid
    res = padam(net, x, y, EPS, 50, loss=loss, start=UniformNoise(noise))
    assert clean.mean() - res.acc.mean() > 0.05
    assert (res.acc <= at_start).all() and res.acc.mean() < at_start.mean()


def test_padam_does_not_depend_on_the_loss_scale(net):
    """The gradients are divided by the first one's size, so scaling the
    loss (here mask_ce_bal's class weights by 2**-20) changes nothing,
    Adam's 1e-8 included."""
    x, y = toy_batch(B=2, seed=10, model=net)
    w = torch.tensor([0.5, 1.0, 2.0])
    a = padam(net, x, y, EPS, 15, loss='mask_ce_bal', class_weights=w)
    b = padam(net, x, y, EPS, 15, loss='mask_ce_bal', class_weights=w * 2**-20)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.correct, b.correct)


def test_gradient_scale_first_step_or_per_step():
    pm = sys.modules['mmseg_robust.attacks.padam']
    zero = torch.zeros(2)
    g1 = torch.tensor([[0.5, -2.0], [0.0, 0.0]])
    g2 = torch.tensor([[4.0, 1.0], [0.0, 0.25]])
    # the first non-zero gradient of each image sets its scale
    s1 = pm._grad_scale(g1, zero, per_step=False)
    assert s1.tolist() == [0.5, 0.0]
    assert pm._grad_scale(g2, s1, per_step=False).tolist() == [0.5, 4.0]
    # under reduced precision every step is normalised
    assert pm._grad_scale(g2, s1, per_step=True).tolist() == [0.25, 4.0]


def test_amp_runs_and_reports_float32(net):
    x, y = toy_batch(B=2, seed=6, model=net)
    res = padam(net, x, y, EPS, 8, loss='cos', amp='bf16')
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    assert res.extra['precision'] == 'bf16'
    torch.testing.assert_close(res.correct, _correct(net, res.x_adv, y))


def test_bad_arguments(net):
    x, y = toy_batch(B=1, seed=7, model=net)
    with pytest.raises(ValueError, match='lr'):
        padam(net, x, y, EPS, 5, lr=-1)
    with pytest.raises(ValueError, match='betas'):
        padam(net, x, y, EPS, 5, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match='unknown loss'):
        padam(net, x, y, EPS, 5, loss='dice')
    with pytest.raises(ValueError, match='n_iter'):
        padam(net, x, y, EPS, 0)


# -- host synchronisation -----------------------------------------------------
def test_padam_syncs_at_most_once_per_10_iterations(net):
    """Batch 8; everything the call syncs, divided by its iterations; more
    iterations add only the read-back every SYNC_EVERY = 25 iterations."""
    x, y = toy_batch(B=8, H=16, W=16, seed=1, model=net)
    total = {}
    for n_iter in (100, 200):
        with HostSyncCounter() as c:
            padam(net, x, y, EPS, n_iter, loss='cos', start=list(range(8)))
        assert c.total / n_iter <= 0.1, dict(c.by_op)
        total[n_iter] = c.total
    assert total[200] - total[100] <= 100 // 25, total
    with HostSyncCounter() as c:
        SEA(net, EPS, n_iter=100, attacks=['padam:ce', 'padam:cos']).run(
            x, y, seed=list(range(8)))
    assert c.total / (2 * 100) <= 0.1, dict(c.by_op)


# -- names and the ensemble ---------------------------------------------------
def test_attack_names():
    assert parse_attack('padam:ce') == AttackSpec('padam:ce', 'padam', 'ce')
    assert parse_attack('padam:cos') == AttackSpec('padam:cos', 'padam', 'cos')
    # APGD with the cosine loss tracks the loss itself
    assert parse_attack('apgd:cos').track == 'cos'
    with pytest.raises(ValueError, match='@TRACKED'):
        parse_attack('padam:ce@ce')  # no step-size control to drive
    with pytest.raises(ValueError, match='padam'):
        parse_attack('padam:dice')


def test_sea_runs_padam_as_its_standalone_run(net):
    """In SEA a PAdam attack draws its start from the image's seed and its
    name, like every attack, and equals its standalone run."""
    x, y = toy_batch(B=3, seed=8, model=net)
    seeds = [4, 5, 6]
    res = SEA(
        net,
        EPS,
        n_iter=9,
        attacks=['mask_ce', 'padam:ce', 'padam:cos'],
        skip_broken=False).run(
            x, y, seed=seeds)
    for name in ('padam:ce', 'padam:cos'):
        noise = start_noise(x, derive_seed(seeds, name))
        alone = run_attack(name, net, x, y, EPS, 9, start=UniformNoise(noise))
        assert torch.equal(alone.correct, res.attacks[name].correct), name
        assert torch.equal(alone.pred, res.attacks[name].pred), name
    assert all((res.correct <= a.correct).all() for a in res.attacks.values())
    assert 'padam:cos' in SEA(
        net, EPS, n_iter=9, attacks=['padam:cos']).describe()


def test_cos_loss_in_the_loss_table_is_finite_for_apgd(net):
    """The new loss also drives APGD (tracking itself)."""
    x, y = toy_batch(B=2, seed=9, model=net)
    res = run_attack('apgd:cos', net, x, y, EPS, 6, start=1)
    assert math.isfinite(float(res.loss.sum()))


@pytest.mark.slow
def test_tools_test_evaluates_with_padam(trained_tiny, tmp_path):
    """``tools/test.py --eval sea --attacks padam:ce padam:cos``: both
    attacks and their worst case in the metrics."""
    import json

    from tests.conftest import load_tool
    metrics = load_tool('test')([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path), '--eval', 'sea', '--eps', '4', '--n-iter', '4',
        '--attacks', 'padam:ce', 'padam:cos'
    ])
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['settings']['attacks'] == ['padam:ce', 'padam:cos']
    worst = metrics['sea/eps4/worst/aAcc']
    assert 0 <= worst <= metrics['sea/clean/aAcc']
    assert worst <= min(metrics['sea/eps4/padam:ce/aAcc'],
                        metrics['sea/eps4/padam:cos/aAcc'])
