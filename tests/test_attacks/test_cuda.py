"""The attacks on a CUDA device (skipped without one): the same numbers as
on the CPU in float32, and runs in bfloat16 / float16 autocast."""
import pytest
import torch

from mmseg_robust.attacks import SEA, HostSyncCounter, apgd_red_eps
from ..tiny_models import PixelNet, toy_batch

pytestmark = pytest.mark.cuda
EPS = 8 / 255


@pytest.fixture(scope='module')
def pair():
    net = PixelNet().eval()
    x, y = toy_batch(B=4, H=32, W=32, seed=1, model=net)
    return net, x, y


def test_sea_on_cuda_matches_the_cpu_in_fp32(pair):
    net, x, y = pair
    seeds = [1, 2, 3, 4]
    cpu = SEA(net, EPS, n_iter=20).run(x, y, seed=seeds)
    gpu = SEA(net.cuda(), EPS, n_iter=20).run(x.cuda(), y.cuda(), seed=seeds)
    net.cpu()
    # the same random starts (drawn on the CPU); the trajectories may part
    # where a gradient entry's sign flips on rounding, so the worst cases
    # agree within a few pixels, not bit for bit
    diff = (gpu.correct.cpu() - cpu.correct).abs().float() / cpu.valid
    assert float(diff.max()) <= 0.02, (gpu.correct, cpu.correct)
    torch.testing.assert_close(gpu.clean_correct.cpu(), cpu.clean_correct)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_sea_runs_in_reduced_precision(pair, amp):
    net, x, y = pair
    net = net.cuda()
    x, y = x.cuda(), y.cuda()
    res = SEA(net, EPS, n_iter=20, amp=amp).run(x, y, seed=[1, 2, 3, 4])
    fp32 = SEA(net, EPS, n_iter=20).run(x, y, seed=[1, 2, 3, 4])
    net.cpu()
    assert res.x_adv.is_cuda
    assert bool(((res.x_adv - x).abs() <= EPS + 1e-6).all())
    assert bool((res.correct <= res.clean_correct).all())
    # within 5 points of float32's worst case on this tiny batch
    gap = (res.correct.sum() - fp32.correct.sum()).abs() / fp32.valid.sum()
    assert float(gap) <= 0.05


def test_red_eps_loop_does_not_sync_on_cuda(pair):
    net, x, y = pair
    net = net.cuda()
    x, y = x.cuda(), y.cuda()
    apgd_red_eps(net, x, y, EPS, 10)  # warm-up
    with HostSyncCounter() as c:
        apgd_red_eps(net, x, y, EPS, 100)
    net.cpu()
    assert c.total / 100 <= 0.1, dict(c.by_op)
