"""The GPU-grade engine on the CPU: no host synchronisation in the attack
loops, input gradients that survive float16, float32 results, faster model
calls (docs/attacks.md, "Host synchronisation", "Precision", "Speed")."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_robust.attacks import (SEA, FastModel, HostSyncCounter, apgd,
                                  apgd_red_eps, core, pgd, pgd_train,
                                  resolve_amp)
from mmseg_robust.attacks.core import Objective
from mmseg_robust.attacks.losses import label_is_max
from mmseg_robust.attacks.precision import (cpu_autocast_supports,
                                            scale_logit_grad)
from ..tiny_models import PixelNet, toy_batch

EPS = 8 / 255
pytestmark = pytest.mark.usefixtures('one_thread')

#: float16 autocast on the CPU needs torch >= 2.2 (torch 2.1 autocasts the
#: CPU to bfloat16 only and the package refuses fp16 there, tested below);
#: the float16 numerics are tested where the CPU can run them
FP16_CPU = cpu_autocast_supports(torch.float16)
needs_fp16_cpu = pytest.mark.skipif(
    not FP16_CPU,
    reason=f'torch {torch.__version__} has no float16 CPU autocast '
    '(refusal tested in test_fp16_on_the_cpu_needs_torch_2_2)')
#: a reduced precision every supported torch runs on the CPU
CPU_AMP = 'fp16' if FP16_CPU else 'bf16'


class Confident(nn.Module):
    """A small stride-4 encoder-decoder with logits scaled by ``T``: at
    T=100 about half of the pixels have p_max > 0.99 (random weights)."""

    def __init__(self, T: float = 100.0, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(), nn.Conv2d(32, classes, 1))
        self.T = T

    def forward(self, x):
        out = self.enc(x * 4 - 2)
        return F.interpolate(
            out, size=x.shape[2:], mode='bilinear',
            align_corners=False) * self.T


# -- host synchronisation ---------------------------------------------------
def test_counter_sees_what_syncs():
    t = torch.arange(6.)
    with HostSyncCounter() as c:
        t.sum().item()
        bool(t.any())
        t[t > 2]
        t.nonzero()
        t.tolist()
        torch.where(t > 2, t, 0)  # no sync
        t[torch.tensor([0, 1])]  # integer index: no sync
    assert c.by_op['_local_scalar_dense'] == 2
    assert c.by_op['index'] == 1 and c.by_op['nonzero'] == 1
    assert c.by_op['tolist'] == 1 and c.total == 5
    assert torch.Tensor.tolist is not None and [
        1
    ] == torch.ones(1).int().tolist()  # restored


@pytest.mark.parametrize('n_iter', [60, 120])
def test_red_eps_and_sea_sync_at_most_once_per_10_iterations(net, n_iter):
    """Batch 8; everything the call syncs, divided by its iterations
    (today's code: about 7 per iteration, docs/benchmarks.md)."""
    x, y = toy_batch(B=8, H=16, W=16, seed=1, model=net)
    with HostSyncCounter() as c:
        apgd_red_eps(net, x, y, EPS, n_iter, loss='mask_ce')
    assert c.total / n_iter <= 0.1, dict(c.by_op)
    with HostSyncCounter() as c:
        SEA(net, EPS, n_iter=n_iter).run(x, y, seed=list(range(8)))
    assert c.total / (4 * n_iter) <= 0.1, dict(c.by_op)


def test_steady_state_iterations_issue_no_sync(net):
    """More iterations add only the read-backs every SYNC_EVERY iterations
    of a run (none in the 30- and 40-iteration stages below)."""
    x, y = toy_batch(B=8, H=16, W=16, seed=2, model=net)
    counts = {}
    for n in (10, 100):  # red-eps stages 3/3/4 and 30/30/40
        with HostSyncCounter() as c:
            apgd_red_eps(net, x, y, 2 / 255, n, loss='js')
        counts[n] = c.total
    # stages of 30, 30, 40 iterations reach one read-back each (at 25)
    assert counts[100] - counts[10] <= 3, counts
    with HostSyncCounter() as c:
        pgd(net, x, y, 2 / 255, 100)
    assert c.total <= 10, dict(c.by_op)


def test_sea_through_the_mmseg_adapter_syncs_rarely():
    from mmseg_robust.models import AttackBatch
    from mmseg_robust.testing import build_tiny_segmentor, fake_batch
    seg = build_tiny_segmentor(seed=0).eval()
    batch = AttackBatch.from_data(seg, fake_batch(8, (24, 20)))
    with HostSyncCounter() as c:
        batch.model(batch.x)  # per-image metadata is on the host
    assert c.total == 0, dict(c.by_op)
    n_iter = 60
    with HostSyncCounter() as c:
        SEA(batch.model, EPS, n_iter=n_iter).run(
            batch.x, batch.y, mask=batch.mask, seed=list(range(8)))
    assert c.total / (4 * n_iter) <= 0.1, dict(c.by_op)


def test_loops_keep_shapes_fixed(net):
    """Every model call of an APGD run sees the whole batch (images that
    are done are masked, not dropped), so one compilation serves a run."""
    x, y = toy_batch(B=5, seed=3, model=net)
    shapes = set()

    def model(z):
        shapes.add(tuple(z.shape))
        return net(z)

    apgd_red_eps(model, x, y, 32 / 255, 30)  # images break early here
    assert shapes == {tuple(x.shape)}


def test_nan_logits_still_raise(net):
    x, y = toy_batch(B=3, seed=4, model=net)

    def broken(z):
        out = net(z)
        return torch.where(
            torch.arange(3).view(3, 1, 1, 1) == 1, out * float('nan'), out)

    with pytest.raises(FloatingPointError, match=r'position\(s\) \[1\]'):
        apgd(broken, x, y, EPS, 30)


def test_zero_gradient_warning_reads_device_flags(net):
    x, y = toy_batch(B=2, seed=5, model=net)

    def shattered(z):  # quantised input: zero gradient everywhere
        q = (z * 4).round() / 4
        return net(z.detach() * 0 + q.detach()) + 0 * z

    with pytest.warns(UserWarning, match='gradient masking'):
        apgd(shattered, x, y, EPS, 5)


# -- precision ----------------------------------------------------------------
def test_label_is_max_is_argmax_without_ties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 9, 11, generator=g)
    labels = torch.randint(0, 7, (3, 9, 11), generator=g)
    assert torch.equal(
        label_is_max(logits, labels),
        logits.argmax(1) == labels)
    tie = torch.zeros(1, 3, 1, 1)
    # a tie with an earlier class counts as correct (argmax says class 0)
    assert bool(label_is_max(tie, torch.tensor([[[2]]])))


def test_resolve_amp():
    assert resolve_amp(False, 'cpu') is None
    assert resolve_amp('fp32', 'cpu') is None
    assert resolve_amp(True, 'cpu') is torch.bfloat16
    assert resolve_amp('auto', 'cpu') is torch.bfloat16
    assert resolve_amp(torch.bfloat16, 'cpu') is torch.bfloat16
    with pytest.raises(ValueError, match='fp16, bf16'):
        resolve_amp('int8', 'cpu')


def test_scaling_by_powers_of_two_is_exact_and_per_image():
    g = torch.randn(3, 4, 5, 6) * torch.tensor([1e-9, 1.0, 0.0]).view(
        3, 1, 1, 1)
    s = scale_logit_grad(g, 4)
    amax = s.flatten(1).abs().amax(1)
    assert 8 <= amax[0] < 16 and 8 <= amax[1] < 16 and amax[2] == 0
    ratio = s[:2] / g[:2]
    assert torch.equal(ratio.flatten(1).amax(1), ratio.flatten(1).amin(1))
    assert torch.equal(
        torch.log2(ratio.flatten(1)[:, 0]),
        torch.log2(ratio.flatten(1)[:, 0]).round())


def test_fp16_on_the_cpu_needs_torch_2_2():
    """float16 where this torch's CPU autocast takes it, else one clear
    error that names the way out (bf16)."""
    if FP16_CPU:
        assert resolve_amp('fp16', 'cpu') is torch.float16
        assert resolve_amp(torch.float16, 'cpu') is torch.float16
    else:
        for amp in ('fp16', torch.float16):
            with pytest.raises(ValueError, match='bfloat16 only.*--amp bf16'):
                resolve_amp(amp, 'cpu')


def _sign_agreement(a, ref):
    nz = ref != 0
    return float((a.sign() == ref.sign())[nz].float().mean())


@needs_fp16_cpu
def test_fp16_input_gradient_of_a_confident_model_at_512():
    """Most pixels with p_max > 0.99 at 512 x 512: without scaling the
    float16 backward pass loses the pixel-mean gradients of confident
    pixels; with it at least 99% of the signs agree with float32."""
    model = Confident().eval()
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    assert float((logits.softmax(1).amax(1) > 0.99).float().mean()) > 0.45
    g32 = Objective(model, y, loss='mask_ce').evaluate(x, 1, 10).grad
    obj = Objective(model, y, loss='mask_ce', amp='fp16')
    first = obj.evaluate(x, 1, 10).grad
    second = obj.evaluate(x, 1, 10).grad  # scaling adapted to the model
    assert _sign_agreement(first, g32) >= 0.99
    assert _sign_agreement(second, g32) >= 0.99
    # the same pass without the scaling (what the loop did before)
    unscaled = Objective(model, y, loss='mask_ce', amp='fp16')
    unscaled.reduced_precision = lambda device: False
    lost = unscaled.evaluate(x, 1, 10).grad
    assert _sign_agreement(lost, g32) < 0.985


@needs_fp16_cpu
def test_adversarial_training_step_under_an_amp_context(monkeypatch):
    """pgd_train inside an autocast context (AmpOptimWrapper's
    optim_context) scales too: its step agrees with float32's, and more
    than the unscaled step does."""
    model = Confident().eval()
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    step32 = pgd_train(model, x, y, 4 / 255, 1)[0] - x
    with torch.autocast('cpu', dtype=torch.float16):
        step16 = pgd_train(model, x, y, 4 / 255, 1)[0] - x
    assert _sign_agreement(step16, step32) >= 0.99
    monkeypatch.setattr(Objective, 'reduced_precision',
                        lambda self, device: False)
    with torch.autocast('cpu', dtype=torch.float16):
        unscaled = pgd_train(model, x, y, 4 / 255, 1)[0] - x
    assert _sign_agreement(unscaled, step32) < 0.985


class _AmplifyBackward(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by 1e6."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 1e6


@needs_fp16_cpu
def test_overflow_backs_off_without_a_false_masking_warning(net):

    def amplifying(z):
        return net(_AmplifyBackward.apply(z.half()).float())

    x, y = toy_batch(B=2, seed=6, model=net)
    obj = Objective(amplifying, y, loss='ce', amp='fp16')
    start = obj.grad_exp.clone()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no zero-gradient warning
        ev = obj.evaluate(x, 1, 10)
        obj.note_zero_grad(ev.grad, ev.correct, torch.ones(2, dtype=bool))
        obj.check()
    assert torch.equal(obj.grad_overflows, torch.ones(2, dtype=torch.int32))
    assert bool((ev.grad == 0).all())
    assert bool((obj.grad_exp < start).all())
    for _ in range(3):  # backs off until the gradient fits
        ev = obj.evaluate(x, 1, 10)
    assert bool(torch.isfinite(ev.grad).all())
    assert bool((ev.grad != 0).any())


@pytest.mark.parametrize('amp', sorted({CPU_AMP, 'bf16'}))
def test_amp_results_are_float32_evaluations(net, amp):
    x, y = toy_batch(B=3, seed=7, model=net)
    res = apgd(net, x, y, EPS, 10, amp=amp)
    with torch.no_grad():
        pred = net(res.x_adv).argmax(1)
    assert torch.equal(res.pred, pred)
    assert torch.equal(res.correct, ((pred == y) & (y != 255)).sum((1, 2)))
    assert res.extra == dict(precision=amp, result_precision='fp32')
    kept = apgd(net, x, y, EPS, 10, amp=amp, result_precision='amp')
    assert kept.extra['result_precision'] == 'amp'


def test_sea_reports_its_precisions(net):
    x, y = toy_batch(B=2, seed=8, model=net)
    sea = SEA(net, EPS, n_iter=6, amp=CPU_AMP)
    assert sea.precision('cpu') == dict(attack=CPU_AMP, result='fp32')
    res = sea.run(x, y)
    with torch.no_grad():
        assert torch.equal(res.clean_pred, net(x).argmax(1))
    assert SEA(net, EPS, amp=True).precision('cpu')['attack'] == 'bf16'
    assert SEA(net, EPS).precision('cpu') == dict(attack='fp32', result='fp32')
    with pytest.raises(ValueError, match='result_precision'):
        SEA(net, EPS, result_precision='fp64')


def test_fp32_path_uses_no_scaling(net, monkeypatch):
    x, y = toy_batch(B=2, seed=9, model=net)
    calls = []
    orig = core.LogitGradScaler.scale

    def spy(self, grad, shifts=None):
        calls.append(1)
        return orig(self, grad, shifts)

    monkeypatch.setattr(core.LogitGradScaler, 'scale', spy)
    apgd(net, x, y, EPS, 3)
    assert not calls
    apgd(net, x, y, EPS, 3, amp='bf16')
    assert calls


# -- faster model calls -----------------------------------------------------
def test_channels_last_gives_the_same_attack(net):
    x, y = toy_batch(B=3, seed=10, model=net)
    fast = FastModel(PixelNet().eval(), channels_last=True)
    assert fast.model.net[0].weight.is_contiguous(
        memory_format=torch.channels_last)
    a = SEA(net, EPS, n_iter=9).run(x, y, seed=[1, 2, 3])
    b = SEA(fast, EPS, n_iter=9).run(x, y, seed=[1, 2, 3])
    assert torch.equal(a.correct, b.correct)
    torch.testing.assert_close(a.x_adv, b.x_adv)


@pytest.mark.slow
def test_compiled_model_gives_the_same_attack(net):
    """torch.compile of the model (CPU inductor; fixed shapes within each
    APGD run)."""
    x, y = toy_batch(B=3, seed=11, model=net)
    fast = FastModel(PixelNet().eval(), compile=True)
    a = apgd_red_eps(net, x, y, EPS, 9, start=[1, 2, 3])
    b = apgd_red_eps(fast, x, y, EPS, 9, start=[1, 2, 3])
    assert torch.equal(a.correct, b.correct)
    torch.testing.assert_close(a.x_adv, b.x_adv)


def test_compile_option_is_checked():
    with pytest.raises(TypeError, match='torch.compile'):
        FastModel(PixelNet(), compile='yes')
