"""SEA across radii (docs/attacks.md): per-attack random starts, monotone
radii,
versions."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import (RECOMMENDED_ATTACKS, SEA, SEA_T1_ATTACKS,
                                  SEA_VERSIONS, UniformNoise, apgd_red_eps,
                                  derive_seed, parse_attack, sea_version,
                                  start_noise)
from ..tiny_models import PixelNet, toy_batch


@pytest.fixture(scope='module')
def net():
    return PixelNet(seed=4).eval()


def test_each_attack_draws_its_own_start(net):
    x, y = toy_batch(B=2, seed=1, model=net)
    assert derive_seed(3, 'js') != derive_seed(3, 'mask_ce')
    assert derive_seed([3, 4],
                       'js') == [derive_seed(3, 'js'),
                                 derive_seed(4, 'js')]
    a = start_noise(x, derive_seed(3, 'js'))
    b = start_noise(x, derive_seed(3, 'mask_ce'))
    assert not torch.equal(a, b)


def test_per_image_results_do_not_depend_on_the_batch(net):
    x, y = toy_batch(B=3, seed=2, model=net)
    seeds = [101, 102, 103]
    full = SEA(net, 8 / 255, n_iter=6).run(x, y, seed=seeds)
    alone = SEA(net, 8 / 255, n_iter=6).run(x[2:], y[2:], seed=seeds[2:])
    assert torch.equal(full.x_adv[2:], alone.x_adv)
    assert torch.equal(full.correct[2:], alone.correct)


def test_larger_radius_starts_from_the_smaller_ones_worst_case(net):
    x, y = toy_batch(B=3, seed=3, model=net)
    small = SEA(net, 4 / 255, n_iter=6).run(x, y, seed=[1, 2, 3])
    big = SEA(net, 8 / 255, n_iter=6).run(x, y, seed=[1, 2, 3], previous=small)
    assert (big.correct <= small.correct).all()
    assert ((big.x_adv - x).abs().amax() <= 8 / 255 + 1e-6)
    kept = big.worst_attack == -2  # the smaller radius's point was kept
    assert torch.equal(big.x_adv[kept], small.x_adv[kept])
    with pytest.raises(ValueError, match='radii must increase'):
        SEA(net, 2 / 255, n_iter=6).run(x, y, previous=small)


def _fragile(x):
    return 50 * (x - 0.5)


def test_images_broken_at_a_smaller_radius_are_not_attacked_again():
    g = torch.Generator().manual_seed(4)
    x = 0.5 + (torch.rand(3, 3, 6, 6, generator=g) - 0.5) * 0.02
    x[2] = torch.rand(3, 6, 6, generator=g)  # image 2 is robust
    y = _fragile(x).argmax(1)
    curve = SEA(_fragile, 1 / 255, n_iter=6).curve(x, y, [4 / 255, 8 / 255])
    first, second = curve
    broken = first.correct == 0
    assert broken[:2].all() and not broken[2]
    for r in second.attacks.values():
        assert not r.extra['ran'][broken].any()
    assert torch.equal(second.x_adv[broken], first.x_adv[broken])


SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    st.integers(0, 2**16), st.integers(1, 3),
    st.sampled_from([[1, 4], [2, 8, 16], [0, 4, 12]]))
def test_curves_are_monotone_and_feasible(seed, B, radii):
    net = PixelNet(seed=5).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, 7, 7, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[torch.rand(B, 7, 7, generator=g) < 0.1] = 255
    curve = SEA(
        net, 1 / 255, n_iter=4).curve(
            x, y, [r / 255 for r in radii], seed=seed)
    prev = curve[0].clean_correct
    for res, r in zip(curve, radii):
        assert (res.correct <= prev).all()
        assert (res.x_adv - x).abs().max() <= r / 255 + 1e-6
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
        with torch.no_grad():
            got = ((net(res.x_adv).argmax(1) == y) &
                   (y != 255)).flatten(1).sum(1)
        assert torch.equal(got, res.correct)
        prev = res.correct


def test_versions():
    assert sea_version('2023').attacks == ('mask_ce', 'bal_ce', 'js',
                                           'mask_sph')
    assert sea_version('SEA-2024') is SEA_VERSIONS['2024']
    assert sea_version(2024).attacks == ('mask_ce_bal', 'mask_ce', 'js')
    with pytest.raises(ValueError, match='thorough .*2023.*2024'):
        sea_version('2025')
    net = PixelNet()
    paper = SEA(net, 4 / 255, version='2023')
    assert paper.version == 'SEA-2023' and paper.n_iter == 300
    assert [a.track for a in paper.attacks] == ['ce', 'ce', 'ce', 'mask_sph']
    new = SEA(net, 4 / 255, version='2024', n_iter=9)
    assert new.names == ['mask_ce_bal', 'mask_ce', 'js']
    assert new.describe() == ('SEA-2024, 9 it./attack: mask_ce_bal (tracks '
                              'ce), mask_ce (tracks ce), js (tracks ce)')
    assert SEA(net, 4 / 255, attacks=['pgd']).version == 'custom'
    with pytest.raises(ValueError, match='not both'):
        SEA(net, 4 / 255, version='2024', attacks=['pgd'])


def test_presets():
    """SEA-R1 is the default and costs what SEA-2023 costs; SEA-T2
    (thorough) is SEA-R1's members at 2.5 times the iterations; SEA-T1, the
    first thorough preset, stays as it was; all mix the two schedules and
    have names and aliases (docs/attacks.md, "Versions and presets")."""
    net = PixelNet()
    default = SEA(net, 4 / 255)
    assert default.version == 'SEA-R1' == sea_version(None).name
    assert default.names == list(RECOMMENDED_ATTACKS)
    assert default.n_iter == 300
    for alias in ('recommended', 'R1', 'sea-r1', 'SEA-R1', ' Recommended '):
        assert sea_version(alias) is SEA_VERSIONS['R1']
    for alias in ('thorough', 'T2', 'SEA-T2'):
        assert sea_version(alias) is SEA_VERSIONS['T2']
    for alias in ('T1', 'SEA-T1', 'sea-t1'):
        assert sea_version(alias) is SEA_VERSIONS['T1']
    paper = sea_version('2023')
    passes = {
        k: len(v.attacks) * v.iterations()
        for k, v in SEA_VERSIONS.items()
    }
    assert passes['R1'] == passes['2023'] == 1200
    assert passes['T2'] == passes['T1'] == 2.5 * passes['2023'] == 3000
    for key in ('R1', 'T2', 'T1'):
        specs = [parse_attack(a) for a in SEA_VERSIONS[key].attacks]
        assert {s.method for s in specs} == {'red_eps', 'apgd'}, key
        # each attack (and each restart of it) once
        assert len({(s.method, s.loss, s.restart)
                    for s in specs}) == len(specs)
    thorough = SEA(net, 4 / 255, version='thorough')
    assert thorough.version == 'SEA-T2'
    assert thorough.names == list(RECOMMENDED_ATTACKS)
    assert thorough.n_iter == 750
    assert thorough.describe().startswith('SEA-T2, 750 it./attack: ')
    # --n-iter N asks for SEA-T2 at SEA-2023's N: 2.5 N per attack, rounded
    # half up (red-eps APGD needs 3, which n_iter=1 still gives)
    for asked, runs in ((100, 250), (6, 15), (3, 8), (1, 3)):
        assert SEA(net, 4 / 255, version='T2', n_iter=asked).n_iter == runs
    # the factor is only SEA-T2's
    for key in ('R1', 'T1', '2023', '2024'):
        assert SEA(net, 4 / 255, version=key, n_iter=7).n_iter == 7
    assert SEA(net, 4 / 255, attacks=['mask_ce'], n_iter=7).n_iter == 7
    with pytest.raises(ValueError, match='n_iter must be an integer'):
        SEA(net, 4 / 255, version='T2', n_iter=0)
    # the first thorough preset: SEA-R1, its restarts and two more members
    first = SEA(net, 4 / 255, version='T1', n_iter=6)
    assert first.version == 'SEA-T1'
    assert first.names == list(SEA_T1_ATTACKS)
    assert {a.restart for a in first.attacks} == {0, 2}
    assert first.describe().startswith('SEA-T1, 6 it./attack: ')
    # the published versions stay as published
    assert paper.attacks == ('mask_ce', 'bal_ce', 'js', 'mask_sph')


def test_thorough_runs_the_recommended_attacks_longer(net):
    """SEA-T2 at ``n_iter=4`` is SEA-R1's attacks at 10 iterations each:
    the same images, predictions and counts; only the name differs."""
    x, y = toy_batch(B=2, seed=7, model=net)
    thorough = SEA(
        net, 8 / 255, version='thorough', n_iter=4).run(
            x, y, seed=[3, 4])
    longer = SEA(
        net, 8 / 255, attacks=list(RECOMMENDED_ATTACKS), n_iter=10).run(
            x, y, seed=[3, 4])
    assert torch.equal(thorough.x_adv, longer.x_adv)
    assert torch.equal(thorough.pred, longer.pred)
    assert torch.equal(thorough.correct, longer.correct)
    assert list(thorough.attacks) == list(RECOMMENDED_ATTACKS)
    for name, run in thorough.attacks.items():
        assert run.n_evals == longer.attacks[name].n_evals


def test_sea_2024_uses_the_class_weights(net):
    x, y = toy_batch(B=2, seed=6, model=net)
    w = torch.tensor([0.1, 1.0, 5.0])
    sea = SEA(
        net,
        8 / 255,
        n_iter=6,
        version='2024',
        class_weights=w,
        skip_broken=False)
    res = sea.run(x, y, seed=[1, 2])
    noise = start_noise(x, derive_seed([1, 2], 'mask_ce_bal'))
    alone = apgd_red_eps(
        net,
        x,
        y,
        8 / 255,
        6,
        loss='mask_ce_bal',
        class_weights=w,
        start=UniformNoise(noise))
    assert torch.equal(alone.pred, res.attacks['mask_ce_bal'].pred)


def test_restarts_by_name(net):
    """``NAME#K`` is attack NAME again from the start its name seeds: the
    same attack (method, loss, tracked objective), another random start,
    so the worst case over both is at or below either."""
    spec = parse_attack('apgd:mask_ce#2')
    assert (spec.method, spec.loss, spec.track,
            spec.restart) == ('apgd', 'mask_ce', 'ce', 2)
    assert parse_attack('js').restart == 0
    for bad in ('js#0', 'js#1', 'js#02', 'js#', 'js#two', 'pgd#2', 'nope#2'):
        with pytest.raises(ValueError, match='unknown attack'):
            parse_attack(bad)
    x, y = toy_batch(B=3, seed=4, model=net)
    sea = SEA(
        net,
        8 / 255,
        n_iter=6,
        attacks=['apgd:mask_ce', 'apgd:mask_ce#2'],
        skip_broken=False)
    assert sea.describe().startswith(
        'custom, 6 it./attack: apgd:mask_ce (tracks ce), '
        'apgd:mask_ce#2 (tracks ce)')
    res = sea.run(x, y, seed=[1, 2, 3])
    first, again = (res.attacks[n].correct for n in sea.names)
    assert bool((res.correct <= torch.minimum(first, again)).all())
    noise = [start_noise(x, derive_seed([1, 2, 3], n)) for n in sea.names]
    assert not torch.equal(*noise)
