"""The trust report inside ``tools/test.py --eval sea`` (SEATestLoop ->
records -> SEAMetric -> summary.json), on the tiny trained model."""
import json
import warnings
from pathlib import Path

import pytest
import torch

from mmseg_robust.attacks import TrustReport
from mmseg_robust.models.attack_adapter import SegmentorAttackModel
from ..conftest import interrupt_after, load_tool

SEA_ARGS = ['--eval', 'sea', '--eps', '4', '12', '--n-iter', '6']
NAMES = [
    'single_step', 'large_radius', 'black_box', 'deterministic', 'gradient',
    'transfer'
]


def _test(trained, work_dir, *extra):
    return load_tool('test')(
        [trained['config'], trained['ckpt'], '--work-dir',
         str(work_dir)] + SEA_ARGS + list(extra))


def _outputs(work):
    sea = Path(work) / 'sea'
    summary = json.loads((sea / 'summary.json').read_text())
    records = [
        json.loads(line)
        for line in (sea / 'rank0.jsonl').read_text().splitlines()[1:]
    ]
    return summary, records


def _verdicts(trust):
    """The checks without the cost (seconds differ between runs)."""
    return [(c['name'], c['status'], c['numbers']) for c in trust['checks']]


@pytest.fixture(scope='module')
def fast_run(trained_tiny, tmp_path_factory):
    """The default: checks on (fast)."""
    work = tmp_path_factory.mktemp('trust_fast')
    metrics = _test(trained_tiny, work)
    return (metrics, ) + _outputs(work)


def test_report_in_summary_and_records(fast_run):
    metrics, summary, records = fast_run
    trust = summary['trust']
    assert [c['name'] for c in trust['checks']] == NAMES
    assert trust['level'] == 'fast' and trust['eps_255'] == '12'
    assert not trust['flagged'], trust
    statuses = {c['name']: c['status'] for c in trust['checks']}
    assert statuses['transfer'] == 'skip'  # no surrogate
    assert all(s == 'pass' for n, s in statuses.items() if n != 'transfer')
    assert trust['cost']['n_images'] == 4 and trust['cost']['n_unchecked'] == 0
    # the trust report adds no metric key (the existing keys are unchanged)
    assert not any('trust' in k for k in metrics)
    assert summary['metrics'] == pytest.approx(metrics)
    # per image at the largest radius, against SEA's worst case there; the
    # black-box attack on every fourth image by dataset index
    for rec in records:
        m = rec['trust']
        assert m['eps'] == '12' and m['level'] == 'fast'
        assert m['worst'] == rec['eps']['12']['worst']['correct']
        assert m['clean'] == rec['clean']['correct']
        assert m['valid'] == rec['valid']
        assert ('square' in m) == (rec['idx'] % 4 == 0)
    # the dataset report is the summary of the stored measurements
    again = TrustReport.from_images([r['trust'] for r in records], 12 / 255,
                                    'fast')
    assert _verdicts(again.to_dict()) == _verdicts(trust)


def test_fast_checks_cost_a_fraction_of_the_attacks(fast_run):
    """Passes counted per image: the fast checks against SEA's own (here a
    short SEA of 6 iterations at two radii, so the share is far above a
    default run's)."""
    _, summary, records = fast_run
    cost = summary['trust']['cost']
    assert cost['grad'] == pytest.approx(
        sum(r['trust']['cost']['grad'] for r in records))
    assert 0 < cost['grad'] < cost['attack_grad']
    assert cost['seconds'] > 0 and cost['attack_seconds'] > 0


def test_checks_none(trained_tiny, tmp_path):
    metrics = _test(trained_tiny, tmp_path, '--checks', 'none')
    summary, records = _outputs(tmp_path)
    assert summary['trust'] is None
    assert not any('trust' in r for r in records)
    assert metrics['sea/n_images'] == 4


def test_resume_keeps_the_measurements(fast_run, trained_tiny, tmp_path,
                                       monkeypatch):
    """Interrupted after two images, resumed: the same report as the
    uninterrupted run (measurements live in the records; per-image seeds)."""
    _, ref, _ = fast_run
    interrupt_after(monkeypatch, 2, lambda: _test(trained_tiny, tmp_path))
    _test(trained_tiny, tmp_path, '--resume')
    summary, _ = _outputs(tmp_path)
    assert _verdicts(summary['trust']) == _verdicts(ref['trust'])
    # records without measurements (resumed from --checks none) are
    # counted, and the report covers the others
    _test(trained_tiny, tmp_path, '--checks', 'none', '--max-images', '2')
    _test(trained_tiny, tmp_path, '--resume')
    summary, _ = _outputs(tmp_path)
    cost = summary['trust']['cost']
    assert cost['n_images'] == 2 and cost['n_unchecked'] == 2


def test_surrogate_transfer_check(trained_tiny, tmp_path):
    """``--surrogate CONFIG CKPT``: the model itself as its own surrogate;
    its transfer attack does not beat SEA's worst case."""
    _test(trained_tiny, tmp_path, '--surrogate', trained_tiny['config'],
          trained_tiny['ckpt'])
    summary, records = _outputs(tmp_path)
    check = [c for c in summary['trust']['checks']
             if c['name'] == 'transfer'][0]
    assert check['status'] == 'pass', check
    assert check['numbers']['n_images'] == 4
    assert summary['trust']['cost']['surrogate'] > 0
    assert all('transfer' in r['trust'] for r in records)


def test_a_shattered_model_is_flagged_in_the_log(trained_tiny, tmp_path,
                                                 monkeypatch):
    """The evaluated model quantises its input (zero gradient): the report
    flags it, and the log has one warning line per flagged check."""
    forward = SegmentorAttackModel.forward

    def shattered(self, x):
        return forward(self, torch.round(x * 8) / 8)

    monkeypatch.setattr(SegmentorAttackModel, 'forward', shattered)
    with warnings.catch_warnings():
        # the attack core's own zero-gradient warning (the report's
        # gradient check measures and explains it)
        warnings.simplefilter('ignore')
        _test(trained_tiny, tmp_path, '--cfg-options', 'log_level=INFO')
    summary, _ = _outputs(tmp_path)
    trust = summary['trust']
    assert trust['flagged']
    flagged = [c['name'] for c in trust['checks'] if c['status'] == 'warn']
    assert 'gradient' in flagged
    log = next(Path(tmp_path).glob('*/*.log')).read_text()
    assert 'trust checks (fast) at 12/255 on 4 image(s): FLAGGED' in log
    for name in flagged:
        assert log.count(f"WARNING - trust check '{name}' warns: ") == 1


def test_eot_reaches_the_report(trained_tiny, tmp_path):
    """``--eot N``: the report's measurements use it too (recorded per
    image), and on this deterministic model nothing changes its verdict."""
    _test(trained_tiny, tmp_path, '--eot', '2', '--max-images', '2')
    summary, records = _outputs(tmp_path)
    assert all(r['trust']['eot'] == 2 for r in records)
    assert not summary['trust']['flagged']


def test_full_checks(trained_tiny, tmp_path):
    """``--checks full``: radius 1.0 too and the square attack on every
    image, and the report says what it cost."""
    _test(trained_tiny, tmp_path, '--checks', 'full', '--max-images', '2')
    summary, records = _outputs(tmp_path)
    trust = summary['trust']
    assert trust['level'] == 'full' and not trust['flagged'], trust
    checks = {c['name']: c for c in trust['checks']}
    assert {'acc_64', 'acc_255'} <= set(checks['large_radius']['numbers'])
    assert checks['black_box']['numbers']['n_images'] == 2
    assert checks['deterministic']['numbers']['repeats'] == 8
    assert all(r['trust']['square_queries'] == 1000 for r in records)
    # the passes of the full level: far more than the fast one's
    assert trust['cost']['forward'] / 2 > 1000
    assert trust['cost']['grad'] / 2 > 100


def test_non_finite_logits_in_a_check_leave_the_images_unchecked(
        trained_tiny, tmp_path, monkeypatch):
    """A check that meets NaN logits (say at 64/255) does not end the
    evaluation: the attack results are kept, the images count as
    unchecked, the log says why."""
    import mmseg_robust.evaluation.loops.sea_test_loop as loop

    def nan_logits(*args, **kwargs):
        raise FloatingPointError('the model returned NaN or inf logits')

    monkeypatch.setattr(loop, 'trust_checks', nan_logits)
    metrics = _test(trained_tiny, tmp_path, '--max-images', '2',
                    '--cfg-options', 'log_level=INFO')
    assert metrics['sea/n_images'] == 2
    summary, records = _outputs(tmp_path)
    assert summary['trust'] is None
    assert not any('trust' in r for r in records)
    log = next(Path(tmp_path).glob('*/*.log')).read_text()
    assert 'trust checks: not run on images [0]: the model returned' in log
