"""The closed-form logit gradients against autograd through the pixel
losses (a straightforward re-derivation), in float32 and float64."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks.core import Objective
from mmseg_robust.attacks.logit_grads import (CLOSED_FORM_LOSSES, LogitBuffer,
                                              closed_form_loss, logit_loss)
from mmseg_robust.attacks.losses import PIXEL_LOSSES
from mmseg_robust.attacks.precision import cpu_autocast_supports
from ..tiny_models import toy_batch


def _logits(T, seed=0, B=2, K=5, H=7, W=6):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, K, H, W, generator=g) * T
    y = torch.randint(0, K, (B, H, W), generator=g)
    y[0, 0, :3] = 255
    return u, y


def _autograd(name, u, y, **kw):
    """Loss map and the gradient of its pixel mean by autograd."""
    uu = u.clone().requires_grad_(True)
    lmap = PIXEL_LOSSES[name](uu, y, ignore_index=255, **kw)
    g, = torch.autograd.grad(lmap.flatten(1).mean(1).sum(), uu)
    return lmap.detach(), g


KW = dict(step=3, total_steps=10)


@pytest.mark.parametrize('name', CLOSED_FORM_LOSSES)
@pytest.mark.parametrize('T', [0.5, 4.0])
def test_values_and_gradients_equal_autograd(name, T):
    u, y = _logits(T, seed=int(T * 10))
    valid = y != 255
    safe = torch.where(valid, y, 0)
    ref, g_ref = _autograd(name, u, y, **KW)
    for track in (None, 'ce', 'mask_sph', 'js'):
        cf = closed_form_loss(u, safe, valid, name, track, scale=1 / 42, **KW)
        torch.testing.assert_close(cf.loss, ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            cf.grad, g_ref, atol=1e-6 * float(g_ref.abs().max()), rtol=1e-4)
        if track is not None:
            torch.testing.assert_close(
                cf.tracked,
                PIXEL_LOSSES[track](u, y, ignore_index=255, **KW),
                atol=1e-6,
                rtol=1e-5)
    assert (cf.grad[~valid.unsqueeze(1).expand_as(u)] == 0).all()
    assert torch.equal(cf.top, u.amax(1))
    assert torch.equal(cf.hit,
                       u.gather(1, safe.unsqueeze(1)).squeeze(1) >= u.amax(1))


def test_mask_ce_bal_with_class_weights_and_targeted_sign():
    u, y = _logits(2.0, seed=3)
    valid = y != 255
    safe = torch.where(valid, y, 0)
    w = torch.tensor([0.5, 1.0, 2.0, 0.0, 3.0])
    ref, g_ref = _autograd('mask_ce_bal', u, y, class_weights=w)
    cf = closed_form_loss(
        u, safe, valid, 'mask_ce_bal', class_weights=w, scale=1 / 42)
    torch.testing.assert_close(cf.loss, ref)
    torch.testing.assert_close(cf.grad, g_ref, atol=1e-8, rtol=1e-4)
    # targeted: the map and the gradient of -CE
    ref, g_ref = _autograd('ce', u, y)
    cf = closed_form_loss(u, safe, valid, 'ce', scale=1 / 42, negate=True)
    torch.testing.assert_close(cf.loss, -ref)
    torch.testing.assert_close(cf.grad, -g_ref, atol=1e-8, rtol=1e-4)


def test_one_class_gives_zero_cos_and_no_nan():
    u = torch.randn(2, 1, 3, 3)
    y = torch.zeros(2, 3, 3, dtype=torch.long)
    cf = closed_form_loss(u, y, y == 0, 'cos', 'mask_sph')
    assert torch.equal(cf.loss, torch.zeros(2, 3, 3))
    assert torch.equal(cf.grad, torch.zeros_like(u))
    assert torch.isfinite(cf.tracked).all()


def test_bal_ce_needs_its_step_and_unknown_losses_raise():
    u, y = _logits(1.0)
    safe, valid = y.clamp(0, 4), y != 255
    with pytest.raises(ValueError, match='step and total_steps'):
        closed_form_loss(u, safe, valid, 'bal_ce')
    with pytest.raises(
            ValueError, match=r'step must be in \[1, total_steps=5'):
        closed_form_loss(u, safe, valid, 'bal_ce', step=6, total_steps=5)
    with pytest.raises(ValueError, match="no closed form for loss 'nope'"):
        logit_loss(u, safe, valid, 'nope', closed=True)


def test_js_at_exactly_one_half_and_cos_on_confidently_wrong_pixels():
    """Two places where autograd's float32 gradient used to be 0: JS at
    p_y = 1/2 exactly (the branch select; ``js_loss`` is fixed too) and
    ``cos`` on confidently wrong pixels (``expm1``'s backward rounds; the
    closed form keeps the float64 value)."""
    u = torch.zeros(1, 2, 2, 2)  # p_y = 1/2 everywhere
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    valid = torch.ones_like(y, dtype=torch.bool)
    _, g = _autograd('js', u, y)
    cf = closed_form_loss(u, y, valid, 'js', scale=1 / 4)
    assert (g != 0).all()
    torch.testing.assert_close(cf.grad, g)
    # cos, label's logit 20 below the other class
    u = torch.tensor([0.0, 20.0]).view(1, 2, 1, 1).repeat(1, 1, 2, 2)
    cf = closed_form_loss(u, y, valid, 'cos', scale=1.0)
    uu = u.double().requires_grad_(True)
    r = torch.exp(2 * (uu[:, 1] - uu[:, 0]))
    g64, = torch.autograd.grad((1 - (1 + r)**-0.5).sum(), uu)
    assert (g64 != 0).all()
    torch.testing.assert_close(cf.grad.double(), g64, rtol=1e-5, atol=0)


def test_buffer_on_the_cpu_only_and_never_handed_back():
    buf = LogitBuffer()
    assert buf.get(torch.empty(2, 3, 4, 4, device='meta')) is None
    a = buf.get(torch.empty(2, 3, 4, 4))
    assert buf.get(torch.empty(2, 3, 4, 4)) is a
    assert buf.get(torch.empty(1, 3, 4, 4)).shape == (1, 3, 4, 4)
    # a model that passes its input through: autograd would return the
    # buffer as the input gradient; the next evaluation must not change it
    x, _ = toy_batch(B=2, seed=3)  # 3 channels: 3 "classes"
    y = torch.randint(
        0, 3, (2, 12, 12), generator=torch.Generator().manual_seed(0))
    obj = Objective(lambda t: t * 1.0, y, 'mask_ce')
    first = obj.evaluate(x).grad
    kept = first.clone()
    obj.evaluate(x.flip(-1))
    assert torch.equal(first, kept)
    # expectation over transformation sums the samples' gradients
    noise = iter([0.1, -0.2, 0.05, 0.3])
    eot = Objective(lambda t: t + next(noise), y, 'js', eot=2)
    ref = [
        Objective(lambda t, c=c: t + c, y, 'js').evaluate(x)
        for c in (0.1, -0.2)
    ]
    torch.testing.assert_close(
        eot.evaluate(x).grad, (ref[0].grad + ref[1].grad) / 2)


@pytest.mark.parametrize('name', ['ce', 'mask_ce', 'js'])
def test_confident_pixels_keep_their_label_gradient(name):
    """At a logit margin of 20 (1 - p_y ~ 4e-9) p_y - 1 rounds to 0 in
    float32; the closed form's label component is -(1 - p_y) to float32
    accuracy (a float64 autograd reference)."""
    u, y = _logits(1.0, seed=5)
    y = y.clamp(0, 4)
    u.scatter_(1, y.unsqueeze(1), u.amax(1, keepdim=True) + 20.0)
    valid = torch.ones_like(y, dtype=torch.bool)
    cf = closed_form_loss(u, y, valid, name, scale=1 / 42)
    # the pixel losses compute in float32: the reference, in float64
    uu = u.double().requires_grad_(True)
    logp = torch.log_softmax(uu, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    if name == 'js':
        q = logp.exp()
        # JS(p, e_y) = (KL(p, m) + KL(e_y, m)) / 2, m = (p + e_y) / 2
        lmap = 0.5 * ((1 - q) * torch.log(torch.tensor(2.0)) +
                      q * torch.log(2 * q / (1 + q)) + torch.log(2 / (1 + q)))
    else:
        lmap = -logp
    g64, = torch.autograd.grad(lmap.sum() / 42, uu)
    label = cf.grad.gather(1, y.unsqueeze(1))
    ref = g64.gather(1, y.unsqueeze(1))
    assert (ref < 0).all() and (label < 0).all()
    torch.testing.assert_close(label.double(), ref, rtol=1e-4, atol=0)
    if name != 'js':  # js_loss sums 1 - p_y from the others too
        # autograd in float32 loses it
        _, g32 = _autograd(name, u, y)
        assert (g32.gather(1, y.unsqueeze(1)) == 0).float().mean() > 0.9


def test_buffer_is_used_and_gives_the_same_result():
    u, y = _logits(3.0, seed=7)
    valid = y != 255
    safe = torch.where(valid, y, 0)
    a = closed_form_loss(u, safe, valid, 'js', 'ce', scale=0.1)
    buf = torch.full_like(u, float('nan'))
    b = closed_form_loss(u, safe, valid, 'js', 'ce', scale=0.1, out=buf)
    assert b.grad.data_ptr() == buf.data_ptr()
    assert torch.equal(a.grad, b.grad) and torch.equal(a.loss, b.loss)


@settings(max_examples=40, deadline=None)
@given(
    T=st.floats(0.1, 40.0),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(['ce', 'mask_ce', 'bal_ce', 'js', 'cossim_ce']))
def test_ce_family_gradient_sums_to_zero_over_classes(T, seed, name):
    """``c (p - e_y)`` sums to 0 over the classes: the closed form's label
    term is the others' mass exactly (relative to its largest entry)."""
    u, y = _logits(T, seed=seed)
    valid = y != 255
    cf = closed_form_loss(u, torch.where(valid, y, 0), valid, name, **KW)
    total = cf.grad.sum(1).abs()
    size = cf.grad.abs().amax(1)
    assert (total <= 1e-6 * size + 1e-30).all()


@pytest.mark.parametrize('loss,track', [('mask_ce', 'ce'), ('js', 'ce'),
                                        ('mask_sph', None), ('bal_ce', 'ce'),
                                        ('cos', None), ('mask_ce', 'cos')])
@pytest.mark.parametrize('amp', [False, 'fp16', 'bf16'])
def test_objective_closed_form_equals_autograd_path(net, loss, track, amp):
    """Objective.evaluate in closed form equals its autograd path (which
    serves a loss without one; ``closed_form=False`` forces it), gradient
    scaling included."""
    if amp == 'fp16' and not cpu_autocast_supports(torch.float16):
        pytest.skip(
            f'torch {torch.__version__} autocasts the CPU to bf16 only')
    x, y = toy_batch(B=3, seed=2, model=net)
    out = []
    for closed in (True, False):
        obj = Objective(net, y, loss, track=track, amp=amp)
        obj.closed_form = closed and obj.closed_form
        ev = obj.evaluate(x, step=2, total_steps=5)
        out.append(ev)
    a, b = out
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.tracked, b.tracked)
    assert torch.equal(a.correct, b.correct)
    scale = b.grad.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    tol = 1e-5 if not amp else 2e-2
    assert ((a.grad - b.grad).abs() <= tol * scale).all()
    # the sign steps agree (where the gradient is not ~0)
    big = b.grad.abs() > 1e-3 * scale
    assert (a.grad.sign() == b.grad.sign())[big].float().mean() > 0.99
