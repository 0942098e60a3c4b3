"""Pixel losses against straightforward reference computations
(docs/attacks.md)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_robust.attacks import (LOSS_NAMES, PIXEL_LOSSES,
                                  class_weights_from_counts, pixel_loss)

IGNORE = 255


def _logits_labels(seed=0, B=2, K=4, H=5, W=6):
    """Random logits with ignored, confidently correct and confidently wrong
    pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, H, W, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, K, (B, H, W), generator=g)
    labels[0, 0, :3] = IGNORE
    # confident correct
    logits[0, :, 1, 1] = -20.0
    logits[0, labels[0, 1, 1], 1, 1] = 20.0
    # confident wrong
    wrong = (labels[1, 2, 2] + 1) % K
    logits[1, :, 2, 2] = -20.0
    logits[1, wrong, 2, 2] = 20.0
    return logits, labels


def _ref_pixelwise(fn, logits, labels):
    """Apply ``fn(u, y) -> float`` pixel by pixel (float64 reference)."""
    B, K, H, W = logits.shape
    out = torch.zeros(B, H, W, dtype=torch.float64)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                y = int(labels[b, i, j])
                if y != IGNORE:
                    out[b, i, j] = fn(logits[b, :, i, j], y)
    return out


def _ce(u, y):
    return -(u[y] - torch.logsumexp(u, 0))


def _is_correct(u, y):
    return float(int(u.argmax()) == y)


REFERENCES = {
    'ce':
    _ce,
    'mask_ce':
    lambda u, y: _is_correct(u, y) * _ce(u, y),
    'cossim_ce':
    lambda u, y: torch.sigmoid(u[y]) / torch.sigmoid(u).norm() * _ce(u, y),
    'mask_sph':
    lambda u, y: -_is_correct(u, y) * u[y] / u.norm(),
}


def _ref_js(u, y):
    p = torch.softmax(u, 0)
    e = torch.zeros_like(p)
    e[y] = 1
    m = (p + e) / 2
    kl_pm = sum(p[k] * torch.log(p[k] / m[k]) for k in range(len(p))
                if p[k] > 0)
    kl_em = -torch.log(m[y])
    return (kl_pm + kl_em) / 2


@pytest.mark.parametrize('name', sorted(REFERENCES))
def test_loss_matches_reference(name):
    logits, labels = _logits_labels()
    out = pixel_loss(name, logits, labels, IGNORE)
    ref = _ref_pixelwise(REFERENCES[name], logits, labels)
    assert out.shape == labels.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert (out[labels == IGNORE] == 0).all()


def test_js_matches_definition_and_bounds():
    logits, labels = _logits_labels(seed=3)
    out = pixel_loss('js', logits, labels, IGNORE)
    ref = _ref_pixelwise(_ref_js, logits, labels)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert (out >= 0).all() and (out <= math.log(2) + 1e-6).all()


@pytest.mark.parametrize('t,T', [(1, 10), (5, 10), (10, 10)])
def test_bal_ce_lambda(t, T):
    logits, labels = _logits_labels(seed=1)
    lam = (t - 1) / (2 * T)

    def ref(u, y):
        c = _is_correct(u, y)
        return ((1 - lam) * c + lam * (1 - c)) * _ce(u, y)

    out = pixel_loss('bal_ce', logits, labels, IGNORE, step=t, total_steps=T)
    torch.testing.assert_close(
        out.double(),
        _ref_pixelwise(ref, logits, labels),
        rtol=1e-5,
        atol=1e-6)


def test_bal_ce_needs_step():
    logits, labels = _logits_labels()
    with pytest.raises(ValueError, match='step and total_steps'):
        pixel_loss('bal_ce', logits, labels)
    with pytest.raises(ValueError, match='step must be in'):
        pixel_loss('bal_ce', logits, labels, step=0, total_steps=3)


def test_mask_ce_bal_with_given_and_default_weights():
    logits, labels = _logits_labels(seed=2)
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    out = pixel_loss('mask_ce_bal', logits, labels, class_weights=w)
    ref = _ref_pixelwise(
        lambda u, y: w[y].double() * REFERENCES['mask_ce'](u, y), logits,
        labels)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    # default: per-image inverse frequency of its own labels
    out = pixel_loss('mask_ce_bal', logits, labels)
    for b in range(2):
        valid = labels[b] != IGNORE
        counts = torch.bincount(labels[b][valid], minlength=4)
        wb = class_weights_from_counts(counts)
        ref_b = _ref_pixelwise(
            lambda u, y: wb[y].double() * REFERENCES['mask_ce'](u, y),
            logits[b:b + 1], labels[b:b + 1])
        torch.testing.assert_close(
            out[b:b + 1].double(), ref_b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='class_weights must have shape'):
        pixel_loss('mask_ce_bal', logits, labels, class_weights=w[:2])


def test_class_weights_from_counts():
    w = class_weights_from_counts(torch.tensor([30., 10., 0., 60.]))
    # pixel-weighted mean weight is 1 and present classes weigh the same
    counts = torch.tensor([30., 10., 0., 60.])
    assert ((w * counts).sum() / counts.sum()).item() == pytest.approx(1.0)
    assert w[2].item() == 0
    totals = (w * counts)[[0, 1, 3]]
    torch.testing.assert_close(totals, totals[:1].expand(3))


@pytest.mark.parametrize('name', LOSS_NAMES)
def test_gradients_finite_at_extremes(name):
    """p_y -> 0 and p_y -> 1 (and float32 saturation) give finite values and
    gradients; JS has no NaN there."""
    K = 5
    u = torch.zeros(3, K, 1, 4, dtype=torch.float32)
    u[:, 0] = torch.tensor([200.0, -200.0, 0.0, 30.0])
    labels = torch.zeros(3, 1, 4, dtype=torch.long)
    u.requires_grad_(True)
    out = pixel_loss(name, u, labels, step=2, total_steps=4)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(u.grad).all()


def test_js_gradient_vanishes_for_misclassified_pixels():
    """The paper's property: dJS/du -> 0 as p_y -> 0, unlike CE."""
    u = torch.zeros(1, 3, 1, 1)
    u[0, 1] = 25.0  # label 0 gets p_y ~ 1e-11
    labels = torch.zeros(1, 1, 1, dtype=torch.long)
    grads = {}
    for name in ('js', 'ce'):
        x = u.clone().requires_grad_(True)
        pixel_loss(name, x, labels).sum().backward()
        grads[name] = x.grad.abs().max().item()
    assert grads['js'] < 1e-8 < 0.5 < grads['ce']


def _grad(name, logits, labels, **kw):
    x = logits.clone().requires_grad_(True)
    pixel_loss(name, x, labels, **kw).sum().backward()
    return x.grad


def test_masks_and_weights_carry_no_gradient():
    logits, labels = _logits_labels(seed=4)
    logits = logits.float()
    ce_grad_map = []
    # per-pixel CE gradient scaled by the detached mask/weight
    safe = labels.clone()
    safe[safe == IGNORE] = 0
    valid = (labels != IGNORE).float()
    correct = (logits.argmax(1) == safe).float()
    sig = logits.sigmoid()
    cos_w = sig.gather(1, safe[:, None])[:, 0] / sig.norm(dim=1)
    x = logits.clone().requires_grad_(True)
    ce = F.cross_entropy(x, safe, reduction='none')
    for name, weight in (('mask_ce', correct), ('cossim_ce', cos_w),
                         ('bal_ce', 0.75 * correct + 0.25 * (1 - correct))):
        ce_grad_map, = torch.autograd.grad(
            (ce * weight * valid).sum(), x, retain_graph=True)
        got = _grad(name, logits, labels, step=6, total_steps=10)
        torch.testing.assert_close(got, ce_grad_map, rtol=1e-5, atol=1e-7)


def test_mask_sph_differentiates_normalisation():
    logits, labels = _logits_labels(seed=5)
    logits = logits.float()
    safe = labels.clone()
    safe[safe == IGNORE] = 0
    correct = ((logits.argmax(1) == safe) & (labels != IGNORE)).float()
    x = logits.clone().requires_grad_(True)
    ref = -(correct * x.gather(1, safe[:, None])[:, 0] / x.norm(dim=1)).sum()
    expected, = torch.autograd.grad(ref, x)
    torch.testing.assert_close(
        _grad('mask_sph', logits, labels), expected, rtol=1e-5, atol=1e-7)


def test_bad_input_errors():
    logits, labels = _logits_labels()
    with pytest.raises(ValueError, match='valid names are: ce, bal_ce'):
        pixel_loss('dice', logits, labels)
    with pytest.raises(ValueError, match=r'logits must be \(B, K, H, W\)'):
        pixel_loss('ce', logits, labels[:, :-1])
    bad = labels.clone()
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError, match=r'labels must be in \[0, 3\].*\[7\]'):
        pixel_loss('ce', logits, bad)
    with pytest.raises(TypeError, match='integer'):
        pixel_loss('ce', logits, labels.float())


def test_registry_lists_all_losses():
    assert set(PIXEL_LOSSES) == {
        'ce', 'bal_ce', 'cossim_ce', 'mask_ce', 'js', 'mask_sph',
        'mask_ce_bal', 'cos'
    }


def _js_high_precision(u, y):
    """D_JS(softmax(u) || e_y) and its gradient, with 60 significant
    digits (mpmath ships with torch's sympy): no cancellation at any
    margin."""
    import mpmath
    with mpmath.workdps(60):
        u = [mpmath.mpf(float(v)) for v in u]
        top = max(u)
        e = [mpmath.e**(v - top) for v in u]
        z = sum(e)
        p = [v / z for v in e]
        q = p[y]
        js = mpmath.log(2) + (q * mpmath.log(q) -
                              (1 + q) * mpmath.log(1 + q)) / 2
        # dJS/dq = log(q / (1 + q)) / 2 and dq/du_k = q (1[k = y] - p_k)
        dq = mpmath.log(q / (1 + q)) / 2
        grad = [dq * q * ((1 if k == y else 0) - p[k]) for k in range(len(u))]
        return float(js), [float(g) for g in grad]


@pytest.mark.parametrize('margin', [5, 10, 17, 20, 30, 45, 60, -5, -20])
def test_js_value_and_gradient_without_cancellation(margin):
    """JS on confidently correct pixels (logit margin 5-60) keeps its value
    and a non-zero gradient, matching a 60-digit reference to float32
    precision (the closed form log 2 + ... rounds to exactly 0 beyond a
    margin of ~17)."""
    u = torch.tensor([0.3, -1.0, 0.5, 0.0])
    u[0] = 0.5 + margin  # label 0, margin over the runner-up (0.5)
    x = u.view(1, 4, 1, 1).clone().requires_grad_(True)
    out = pixel_loss('js', x, torch.zeros(1, 1, 1, dtype=torch.long))
    out.sum().backward()
    ref, ref_grad = _js_high_precision(u.tolist(), 0)
    assert ref > 0
    assert out.item() == pytest.approx(ref, rel=1e-5)
    got = x.grad.view(-1).tolist()
    assert all(g != 0 for g in got)
    for g, r in zip(got, ref_grad):
        assert g == pytest.approx(r, rel=1e-4)


def test_js_has_no_nan_at_extreme_margins():
    u = torch.zeros(4, 3, 1, 1)
    u[0, 0], u[1, 1], u[2, 0], u[3, 0] = 200.0, 200.0, 1e4, -1e4
    u.requires_grad_(True)
    out = pixel_loss('js', u, torch.zeros(4, 1, 1, dtype=torch.long))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(u.grad).all()
    # correct with margin 200: D_JS underflows to 0; wrong: log 2
    assert out[0].item() == 0.0 and out[2].item() == 0.0
    assert out[1].item() == pytest.approx(math.log(2))
