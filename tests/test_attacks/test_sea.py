"""SEA, PGD baselines, attack names (docs/attacks.md)."""
import pytest
import torch

from mmseg_robust.attacks import (RECOMMENDED_ATTACKS, SEA, SEA_LOSSES,
                                  AttackSpec, UniformNoise, apgd_red_eps,
                                  derive_seed, parse_attack, pgd,
                                  pgd_step_size, run_attack, start_noise)
from ..tiny_models import PixelNet, toy_batch


@pytest.fixture(scope='module')
def net():
    return PixelNet(seed=1).eval()


def test_parse_attack_names():
    # APGD attacks carry their tracked objective (the documented defaults)
    assert parse_attack('mask_ce') == AttackSpec(
        'mask_ce', 'red_eps', 'mask_ce', track='ce')
    assert parse_attack('mask_sph').track == 'mask_sph'
    assert parse_attack('segpgd') == AttackSpec('segpgd', 'pgd', 'bal_ce')
    assert parse_attack('cospgd').loss == 'cossim_ce'
    assert parse_attack('pgd').loss == 'ce'
    assert parse_attack('apgd:js') == AttackSpec(
        'apgd:js', 'apgd', 'js', track='ce')
    assert parse_attack('mask_ce@mask_ce') == AttackSpec(
        'mask_ce@mask_ce', 'red_eps', 'mask_ce', track='mask_ce')
    assert parse_attack('apgd:mask_sph@ce').track == 'ce'
    with pytest.raises(ValueError, match='segpgd'):
        parse_attack('fgsm')
    with pytest.raises(ValueError, match='unknown attack'):
        parse_attack('pgd:dice')
    with pytest.raises(ValueError, match='@TRACKED'):
        parse_attack('pgd:ce@ce')  # PGD has no step-size control
    with pytest.raises(ValueError, match='unknown attack'):
        parse_attack('mask_ce@hinge')


def test_pgd_step_sizes_from_the_paper():
    assert pgd_step_size(4 / 255) == 3e-3
    assert pgd_step_size(12 / 255) == 6e-3
    assert pgd_step_size(0.5 / 255) == 9e-4
    assert pgd_step_size(16 / 255) == pytest.approx(7e-3)
    assert pgd_step_size(6 / 255) == pytest.approx(4e-3)
    assert pgd_step_size(0.125 / 255) == pytest.approx(4e-4)


def test_pgd_is_sign_gradient_ascent(net):
    """One PGD step from x: P(x + step * sign(grad CE))."""
    x, y = toy_batch(B=1, seed=2, model=net)
    step = 2 / 255
    res = pgd(net, x, y, 4 / 255, 1, step_size=step, early_stop=False)
    z = x.clone().requires_grad_(True)
    from mmseg_robust.attacks import pixel_loss
    loss = pixel_loss('ce', net(z), y).flatten(1).mean(1).sum()
    g, = torch.autograd.grad(loss, z)
    x1 = (x + step * g.sign()).clamp(0, 1)
    with torch.no_grad():
        c1 = ((net(x1).argmax(1) == y) & (y != 255)).sum()
        c0 = ((net(x).argmax(1) == y) & (y != 255)).sum()
    # lowest-accuracy iterate among x0 (= x) and x1
    expected = x1 if c1 < c0 else x
    torch.testing.assert_close(res.x_adv, expected)


def test_sea_worst_case_is_minimum_over_attacks(net):
    x, y = toy_batch(B=4, seed=3, model=net)
    sea = SEA(
        net, 8 / 255, n_iter=9, seed=1, skip_broken=False, version='2023')
    res = sea.run(x, y)
    assert list(res.attacks) == list(SEA_LOSSES)
    per_attack = torch.stack([res.attacks[n].correct for n in res.attacks])
    assert torch.equal(
        res.correct,
        torch.minimum(per_attack.min(0).values, res.clean_correct))
    # worst_attack points at the attack whose result was kept
    for i, k in enumerate(res.worst_attack.tolist()):
        source = res.clean_correct if k < 0 else per_attack[k]
        assert int(source[i]) == int(res.correct[i])
    with torch.no_grad():
        assert torch.equal(net(res.x_adv).argmax(1), res.pred)


@pytest.mark.parametrize('version', ['2023', 'recommended'])
def test_sea_attacks_equal_standalone_runs(net, version):
    """With skip_broken=False each attack is exactly its standalone run
    (red-eps or constant radius)."""
    x, y = toy_batch(B=3, seed=4, model=net)
    sea = SEA(
        net, 8 / 255, n_iter=9, seed=2, skip_broken=False, version=version)
    res = sea.run(x, y)
    for name in sea.names:
        # each attack draws its own start, seeded by the seed and its name
        noise = start_noise(x, derive_seed(2, name))
        alone = run_attack(
            name, net, x, y, 8 / 255, 9, start=UniformNoise(noise))
        assert torch.equal(alone.correct, res.attacks[name].correct), name
        assert torch.equal(alone.pred, res.attacks[name].pred), name
    if version == '2023':
        assert sea.names == list(SEA_LOSSES)
        alone = apgd_red_eps(
            net,
            x,
            y,
            8 / 255,
            9,
            loss='js',
            start=UniformNoise(start_noise(x, derive_seed(2, 'js'))))
        assert torch.equal(alone.correct, res.attacks['js'].correct)


def _fragile(x):
    """Logits 50 (x - 0.5): images close to 0.5 break completely."""
    return 50 * (x - 0.5)


def test_skipping_broken_images_does_not_change_the_worst_case(net):
    x, y = toy_batch(B=4, seed=5, model=net)
    x[:2] = 0.5 + (x[:2] - 0.5) * 0.02  # images 0 and 1 are fragile
    y = _fragile(x).argmax(1)
    y[0, :2] = 255
    y[2] = (y[2] + 1) % 3  # broken before any attack
    full = SEA(
        _fragile, 16 / 255, n_iter=9, seed=3, skip_broken=False).run(x, y)
    skip = SEA(
        _fragile, 16 / 255, n_iter=9, seed=3, skip_broken=True).run(x, y)
    assert (full.correct[:3] == 0).all() and (full.correct[3] > 0)
    assert torch.equal(full.x_adv, skip.x_adv)
    assert torch.equal(full.pred, skip.pred)
    assert torch.equal(full.correct, skip.correct)
    assert torch.equal(full.worst_attack, skip.worst_attack)
    # image 2 was never attacked when skipping
    assert not any(bool(r.extra['ran'][2]) for r in skip.attacks.values())
    # skipping saved work
    assert sum(r.n_evals for r in skip.attacks.values()) < \
        sum(r.n_evals for r in full.attacks.values())


def test_sea_with_baselines(net):
    x, y = toy_batch(B=2, seed=6, model=net)
    res = SEA(
        net, 4 / 255, n_iter=6, attacks=['pgd', 'segpgd', 'cospgd',
                                         'apgd:ce']).run(x, y)
    assert list(res.attacks) == ['pgd', 'segpgd', 'cospgd', 'apgd:ce']
    for name in res.attacks:
        assert (res.correct <= res.attacks[name].correct).all()


def test_sea_eps_zero_and_result_accessors(net):
    x, y = toy_batch(B=2, seed=7, model=net)
    res = SEA(net, 0.0, n_iter=3).run(x, y)
    assert torch.equal(res.x_adv, x)
    assert torch.equal(res.acc, res.clean_acc)
    assert torch.equal(res.attack_acc('js'), res.clean_acc)


def test_sea_bad_configuration(net):
    with pytest.raises(ValueError, match='red-eps APGD needs >= 3'):
        SEA(net, 4 / 255, n_iter=2)
    SEA(net, 4 / 255, n_iter=2, attacks=['pgd'])  # PGD alone is fine
    with pytest.raises(ValueError, match='unique'):
        SEA(net, 4 / 255, attacks=['pgd', 'pgd'])
    with pytest.raises(ValueError, match='8/255'):
        SEA(net, 4.0)
    with pytest.raises(ValueError, match='valid names'):
        SEA(net, 4 / 255, losses=('mask_ce', 'hinge'))


def test_sea_warns_for_stochastic_model(net):
    x, y = toy_batch(B=2, seed=8, model=net)

    def noisy(z):
        return net(z) + torch.randn(z.shape[0], 3, *z.shape[2:])

    with pytest.warns(UserWarning, match='different outputs'):
        SEA(noisy, 4 / 255, n_iter=3, losses=('mask_ce', )).run(x, y)


def test_sea_callback_reports_progress(net):
    x, y = toy_batch(B=2, seed=9, model=net)
    calls = []
    SEA(net,
        4 / 255,
        n_iter=3,
        callback=lambda name, res, worst: calls.append(
            (name, int(worst.sum())))).run(x, y)
    assert [c[0] for c in calls] == list(RECOMMENDED_ATTACKS)
    assert all(a[1] >= b[1] for a, b in zip(calls, calls[1:]))


def test_run_attack_dispatch(net):
    x, y = toy_batch(B=1, seed=10, model=net)
    r1 = run_attack('js', net, x, y, 4 / 255, 6, start=0)
    r2 = apgd_red_eps(net, x, y, 4 / 255, 6, loss='js', start=0)
    assert torch.equal(r1.x_adv, r2.x_adv)
