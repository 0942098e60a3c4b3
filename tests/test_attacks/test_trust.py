"""The trust report (mmseg_robust/attacks/trust.py): each deliberately
broken model is flagged by the check that should catch it, honest models
are not, and the report's numbers are what they say."""
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mmseg_robust.attacks import (TRUST_BUDGETS, TrustReport, apgd,
                                  derive_seed, trust_checks)
from mmseg_robust.attacks.trust import SATURATED_SHARE, TOLERANCE, tolerance_px
from ..tiny_models import (PixelNet, Shattered, Stochastic, Vanishing,
                           toy_batch, train_small_segnet)

EPS = 8 / 255
pytestmark = [
    pytest.mark.usefixtures('one_thread'),
    # the attack core's own zero-gradient warning, which the report replaces
    pytest.mark.filterwarnings('ignore:the input gradient is zero')
]


@pytest.fixture(scope='module')
def trained():
    """A small clean model trained in the test (about a second)."""
    return train_small_segnet(32, 100, 4)


@pytest.fixture(scope='module')
def pixelnet():
    net = PixelNet().eval()
    x, y = toy_batch(B=4, H=16, W=16, seed=1, model=net)
    return net, x, y


def _status(report):
    return {c.name: c.status for c in report.checks}


# -- the verdicts ------------------------------------------------------------
@pytest.mark.parametrize('which', ['trained', 'pixelnet'])
def test_honest_models_are_not_flagged(which, request):
    model, x, y = request.getfixturevalue(which)
    report = trust_checks(model, x, y, EPS, square_images=range(len(x)))
    assert not report.flagged, report.format()
    assert _status(report) == dict(
        single_step='pass',
        large_radius='pass',
        black_box='pass',
        deterministic='pass',
        gradient='pass',
        transfer='skip')


@pytest.mark.parametrize(
    'broken, catcher',
    [
        # zero input gradient everywhere
        (Shattered, 'gradient'),
        # two forward passes differ
        (Stochastic, 'deterministic'),
        # the loss gradient underflows on the correct pixels
        (Vanishing, 'gradient'),
    ])
def test_broken_models_are_flagged_by_their_check(trained, broken, catcher):
    net, x, y = trained
    torch.manual_seed(0)  # the stochastic model's draws
    report = trust_checks(broken(net).eval(), x, y, EPS)
    assert report.flagged
    check = report.check(catcher)
    assert check.status == 'warn', report.format()
    n = check.numbers
    if broken is Shattered:
        assert n['n_zero'] == n['n_images'] == len(x)
        assert 'BPDA' in check.message
    elif broken is Vanishing:
        assert n['n_saturated'] == len(x)
        assert n['saturated_pct'] > 100 * SATURATED_SHARE
        assert 'temperature' in check.message
    else:
        assert n['n_differ'] == len(x) and n['max_logit_diff'] > 0.1
        assert '--eot N' in check.message and 'eot=N' in check.message
    # the honest model under the same wrapper-free settings passes it
    assert trust_checks(net, x, y, EPS).check(catcher).status == 'pass'


def test_shattered_model_is_caught_without_the_gradient_check(trained):
    """A shattered model also fails the checks that do not look at the
    gradient: a large radius holds, and the black-box attack (every image)
    beats the white-box worst case."""
    net, x, y = trained
    report = trust_checks(
        Shattered(net).eval(), x, y, EPS, square_images=range(len(x)))
    assert report.check('large_radius').status == 'warn'
    assert report.check('large_radius').numbers['n_above_64'] == len(x)


def test_transfer_from_an_honest_surrogate(trained):
    """Adversarial images made on the honest model beat the white-box
    attack on its shattered copy; on the honest model itself they do not
    beat its own worst case."""
    net, x, y = trained
    shattered = trust_checks(Shattered(net).eval(), x, y, EPS, surrogate=net)
    check = shattered.check('transfer')
    assert check.status == 'warn', shattered.format()
    assert check.numbers['acc'] < check.numbers['worst_acc']
    honest = trust_checks(net, x, y, EPS, surrogate=net)
    assert honest.check('transfer').status == 'pass', honest.format()
    assert honest.cost['surrogate'] > 0


# -- the numbers -------------------------------------------------------------
def test_numbers_against_a_direct_derivation(trained):
    """Per-image measurements re-derived by hand: clean and one-step
    correct pixels, the constant-prediction level, the large-radius APGD
    with the report's seeds, and the summaries pooled from them."""
    net, x, y = trained
    y = y.clone()
    y[0, :3] = 255  # some ignored pixels
    B = len(x)
    worst = torch.tensor([5, 10, 570, 0])
    report = trust_checks(net, x, y, EPS, worst=worst, seed=3)
    valid = y != 255
    safe = torch.where(valid, y, 0)
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    ce = (F.cross_entropy(logits, safe, reduction='none') * valid).sum()
    g, = torch.autograd.grad(ce, xg)
    x1 = torch.min(
        torch.max(x + EPS * g.sign(), (x - EPS).clamp(0, 1)),
        (x + EPS).clamp(0, 1))
    with torch.no_grad():
        one = ((net(x1).argmax(1) == y) & valid).flatten(1).sum(1)
        clean = ((net(x).argmax(1) == y) & valid).flatten(1).sum(1)
    seeds = derive_seed(3, 'trust:large:64')
    large = apgd(
        net,
        x,
        y,
        64 / 255,
        TRUST_BUDGETS['fast'].large_iter,
        loss='mask_ce',
        start=[seeds + i for i in range(B)]).correct
    for i, m in enumerate(report.images):
        assert m['valid'] == int(valid[i].sum())
        assert m['clean'] == int(clean[i])
        assert m['worst'] == int(worst[i])
        assert m['single_step'] == int(one[i])
        assert m['majority'] == int(torch.bincount(y[i][valid[i]]).max())
        assert m['large']['64'] == int(large[i])
        assert ('square' in m) == (i % 4 == 0)  # fast: every fourth image
    n = report.check('single_step').numbers
    beaten = [
        i for i in range(B)
        if int(worst[i] - one[i]) > tolerance_px(int(valid[i].sum()))
    ]
    assert n['n_beaten'] == len(beaten) and n['n_images'] == B
    assert report.check('single_step').status == ('warn' if beaten else 'pass')
    assert n['acc'] == round(100 * one.sum().item() / valid.sum().item(), 2)
    assert n['worst_acc'] == round(
        100 * worst.sum().item() / valid.sum().item(), 2)
    assert n['max_gap_pct'] == max(
        round(100 * int(worst[i] - one[i]) / int(valid[i].sum()), 2)
        for i in range(B))
    lr = report.check('large_radius').numbers
    assert lr['acc_64'] == round(100 * large.sum().item() / valid.sum().item(),
                                 2)
    assert lr['n_above_64'] == sum(m['large']['64'] > m['majority']
                                   for m in report.images)


def test_tolerance_is_inclusive():
    """A gap of exactly the tolerance passes, one pixel more warns."""
    valid = 1000
    tol = tolerance_px(valid)
    assert tol == math.ceil(TOLERANCE * valid) == 10
    assert tolerance_px(3) == 1  # at least one pixel
    base = dict(valid=valid, clean=900, worst=500, majority=600)
    ok = TrustReport.from_images([dict(base, square=500 - tol)], EPS, 'fast')
    bad = TrustReport.from_images([dict(base, square=499 - tol)], EPS, 'fast')
    assert ok.check('black_box').status == 'pass'
    assert bad.check('black_box').status == 'warn' and bad.flagged
    assert bad.check('black_box').numbers['max_gap_pct'] == 1.1
    # checks without measurements are skipped, not passed
    assert ok.check('transfer').status == 'skip'
    assert ok.check('deterministic').status == 'skip'


def test_an_images_measurements_do_not_depend_on_its_batch(pixelnet):
    """Per-image seeds: an image measured alone gives the numbers it gets
    in a batch (what makes per-image records resumable)."""
    net, x, y = pixelnet
    seeds = [11, 12, 13, 14]
    worst = torch.tensor([200, 210, 220, 230])
    batch = trust_checks(
        net, x, y, EPS, worst=worst, seed=seeds, square_images=[1])
    alone = trust_checks(
        net,
        x[1:2],
        y[1:2],
        EPS,
        worst=worst[1:2],
        seed=seeds[1:2],
        square_images=[0])
    assert batch.images[1] == alone.images[0]


def test_costs_are_counted_and_fast_is_cheap(pixelnet):
    """Passes are counted per image; the fast level, given the worst case,
    stays within a few dozen forward+backward equivalents per image (the
    overhead target of docs/benchmarks.md)."""
    net, x, y = pixelnet
    B = len(x)
    budget = TRUST_BUDGETS['fast']
    report = trust_checks(net, x, y, EPS, worst=torch.zeros(B))
    cost = report.cost
    assert cost['n_images'] == B and cost['seconds'] > 0
    # gradient pass, plus APGD's start and iterations at each large radius
    assert B <= cost['grad'] <= B * (1 + len(budget.large_radii) *
                                     (budget.large_iter + 1))
    # FGSM point, repeats, APGD's final predictions, square queries and
    # the square attack's final prediction
    n_square = len(range(0, B, 4))
    assert cost['forward'] >= B * (1 + budget.repeats)
    assert cost['forward'] <= B * (1 + budget.repeats + 2) + \
        n_square * (budget.square_queries + 1)
    per_image = (cost['grad'] + cost['forward'] / 3) / B
    assert per_image <= 40, per_image
    assert 'forward+backward' in report.format()


def test_full_level_adds_radius_one(pixelnet):
    net, x, y = pixelnet
    budget = replace(
        TRUST_BUDGETS['full'],
        large_iter=3,
        square_queries=5,
        repeats=3,
        whitebox_iter=3)
    report = trust_checks(net, x, y, EPS, level='full', budget=budget)
    n = report.check('large_radius').numbers
    assert 'acc_64' in n and 'acc_255' in n
    assert n['acc_255'] <= n['constant_acc']
    assert report.check('black_box').numbers['n_images'] == len(x)
    assert report.check('deterministic').numbers['repeats'] == 3
    assert report.level == 'full'


def test_report_round_trips_through_json(trained):
    net, x, y = trained
    report = trust_checks(Shattered(net).eval(), x, y, EPS)
    d = report.to_dict(images=True)
    again = json.loads(json.dumps(d, allow_nan=False))
    assert again == d
    back = TrustReport.from_dict(again)
    assert back.to_dict(images=True) == d
    assert back.flagged and d['flagged']
    assert [c['name'] for c in d['checks']] == [
        'single_step', 'large_radius', 'black_box', 'deterministic',
        'gradient', 'transfer'
    ]
    # the summary recomputed from the stored measurements is the same
    assert TrustReport.from_images(d['images'], d['eps'], d['level'],
                                   d['cost']).to_dict() == report.to_dict()
    text = report.format()
    assert 'WARN' in text and 'FLAGGED' in text
    assert len(text.splitlines()) == 3 + len(report.checks) + 1


def test_radius_zero_and_bad_level(pixelnet):
    net, x, y = pixelnet
    report = trust_checks(net, x, y, 0.0)
    for name in ('single_step', 'black_box', 'transfer'):
        assert report.check(name).status == 'skip'
    assert not report.flagged
    with pytest.raises(ValueError, match='level'):
        trust_checks(net, x, y, EPS, level='none')
    with pytest.raises(ValueError, match='one count per image'):
        trust_checks(net, x, y, EPS, worst=[1, 2])


# -- the l2 threat model -----------------------------------------------------
def test_l2_checks_honest_and_shattered(trained):
    """``norm='l2'``: the same verdicts in the l2 ball. The checks' points
    are feasible l2 perturbations (the one-step point on the sphere, the
    square attack's l_inf ball inside the l2 ball), and the large radius is
    the l2 radius of an RMS change of 64/255 per value."""
    net, x, y = trained
    eps = 1.0  # an RMS change of 1/sqrt(3*24*24) = 6.1/255 per value
    report = trust_checks(
        net, x, y, eps, norm='l2', square_images=range(len(x)))
    assert not report.flagged, report.format()
    assert report.norm == 'l2' and 'l2 1' in report.format()
    assert report.to_dict()['norm'] == 'l2'
    assert TrustReport.from_dict(report.to_dict()).norm == 'l2'
    assert 'l2 RMS 64/255' in report.check('large_radius').message
    broken = trust_checks(
        Shattered(net).eval(),
        x,
        y,
        eps,
        norm='l2',
        square_images=range(len(x)))
    assert broken.check('gradient').status == 'warn'
    assert broken.check('large_radius').status == 'warn'
    with pytest.raises(ValueError, match='not a valid l2 radius'):
        trust_checks(net, x, y, -1.0, norm='l2')


def test_a_stochastic_model_attacked_with_eot_passes(trained):
    """With expectation over transformation (the remedy the warning
    suggests) the determinism check still measures the randomness but
    passes, saying so; the checks' gradients average ``eot`` passes."""
    net, x, y = trained
    torch.manual_seed(0)
    plain = trust_checks(Stochastic(net).eval(), x, y, EPS, worst=[0] * 4)
    torch.manual_seed(0)
    report = trust_checks(
        Stochastic(net).eval(), x, y, EPS, worst=[0] * 4, eot=3)
    check = report.check('deterministic')
    assert check.status == 'pass' and check.numbers['eot'] == 3
    assert check.numbers['n_differ'] == len(x)
    assert 'eot=3' in check.message
    assert plain.check('deterministic').status == 'warn'
    # the gradient pass and every APGD step: three passes each
    assert report.cost['grad'] == 3 * plain.cost['grad']
    with pytest.raises(ValueError, match='eot'):
        trust_checks(net, x, y, EPS, eot=0)


def test_a_batch_without_correct_pixels_and_one_without_labels(pixelnet):
    """No image with a correct pixel: the gradient check has nothing to
    look at and says so (it used to fail formatting a missing share); an
    image without valid pixels keeps its place among the report's images
    (a caller pairs them with its own records)."""
    net, x, y = pixelnet
    wrong = torch.where(y == 255, y, (y + 1) % 3)
    report = trust_checks(net, x, wrong, EPS)
    assert report.check('gradient').status == 'skip'
    assert 'no image with correctly classified' in \
        report.check('gradient').message
    report.format()
    y = y.clone()
    y[0] = 255
    report = trust_checks(net, x, y, EPS)
    assert [m['valid'] for m in report.images] == \
        (y != 255).flatten(1).sum(1).tolist()
    assert report.images[0]['valid'] == 0
    assert report.check('single_step').numbers['n_images'] == len(x) - 1
