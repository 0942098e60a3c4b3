"""``tools/demo.py`` on a shortened run: the same code path as ``make demo``
(dataset from ndev-sampledata, ``tools/train.py`` twice, ``tools/test.py
--eval sea`` for SEA and the baselines, the pictures), with fewer training
iterations, one radius, fewer attack iterations and fewer tiles."""
import json
import os.path as osp

import pytest

from ..conftest import load_tool

SHORT = [
    '--max-iters', '200', '--eps', '4', '--n-iter', '8', '--max-images', '10'
]


# ~2.5 min on 2 cores: `make test` runs it, `make test-fast` not
@pytest.mark.slow
def test_demo_shortened_run(tmp_path):
    """One test (not several sharing a fixture): pytest-xdist would run a
    shared module fixture once per worker, i.e. the demo twice."""
    demo = load_tool('demo')
    work, docs = tmp_path / 'demo', tmp_path / 'docs'
    first = demo(['--work-dir', str(work)] + SHORT +
                 ['--save-docs', str(docs)])
    second = demo(['--work-dir', str(work)] + SHORT)
    _check_claims(first)
    _check_reuse(first, second)
    _check_outputs(work, docs)


def _check_claims(first):
    at = first['results']['AT^2']['metrics']
    clean = first['results']['clean']['metrics']
    assert at['sea/n_images'] == clean['sea/n_images'] == 10
    # the paper's qualitative claim, on the demo's own numbers
    assert at['sea/eps4/worst/mIoU'] > clean['sea/eps4/worst/mIoU'] + 5
    # robust <= clean for every attack
    for m in (at, clean):
        for attack in ('worst', 'pgd', 'segpgd', 'cospgd'):
            assert m[f'sea/eps4/{attack}/aAcc'] <= m['sea/clean/aAcc']
    claims = dict((text, ok) for ok, text in first['claims'])
    # monotone curves (aAcc, mIoU), AT^2 above clean, SEA vs baselines
    # (aAcc, mIoU), the trust report
    assert len(claims) == 6
    monotone = [t for t in claims if 'never increases with the radius' in t]
    assert len(monotone) == 2 and all(claims[t] for t in monotone)
    at_claim = [t for t in claims if t.startswith('AT^2 worst-case mIoU')]
    assert len(at_claim) == 1 and claims[at_claim[0]]
    # the trust report's verdict on the honest demo models: neither is
    # flagged (every check passes; no surrogate, so no transfer check)
    for name, r in first['results'].items():
        trust = r['trust']
        assert trust is not None and not trust['flagged'], (name, trust)
        assert trust['level'] == 'fast' and trust['eps_255'] == '4'
        status = {c['name']: c['status'] for c in trust['checks']}
        assert status.pop('transfer') == 'skip'
        assert set(status.values()) == {'pass'}, (name, status)
        assert trust['cost']['n_images'] == 10
    trust_claim = [t for t in claims if t.startswith('the trust report')]
    assert len(trust_claim) == 1 and claims[trust_claim[0]]
    # on the clean model SEA is far stronger than any baseline at 4/255
    for b in ('pgd', 'segpgd', 'cospgd'):
        assert clean['sea/eps4/worst/aAcc'] <= clean[f'sea/eps4/{b}/aAcc']
    # where the models break: per-image mIoU and accuracy by object size;
    # the buckets' pixels are the valid pixels (all valid in the demo)
    for m in (at, clean):
        for row in ('clean', 'eps4/worst'):
            assert 0 <= m[f'sea/{row}/mImgIoU'] <= 100
        n_px = {b: m[f'sea/n_px_{b}'] for b in ('small', 'medium', 'large')}
        assert sum(n_px.values()) == 10 * 128 * 128
        for b, n in n_px.items():
            assert (f'sea/eps4/worst/aAcc_{b}' in m) == (n > 0)


def _check_reuse(first, second):
    assert first['timing']['train clean'] > 0
    assert first['timing']['train AT^2'] > 0
    for key in ('train clean', 'train AT^2', 'evaluate clean',
                'evaluate AT^2'):
        assert second['timing'][key] == 0.0, key
    assert second['results'] == first['results']


def _check_outputs(work, docs):
    for name in ('demo_robustness_curve.png', 'demo_attack_panel.png'):
        for folder in (work, docs):
            path = folder / name
            assert path.is_file() and path.stat().st_size > 10_000, path
    text = (docs / 'demo_results.md').read_text()
    assert '| 4/255 |' in text and '[ok] AT^2 worst-case mIoU' in text
    for folder in (work, docs):
        path = folder / 'demo_robustness_by_size.png'
        assert path.is_file() and path.stat().st_size > 10_000, path
    assert '| eps | clean mIoU/img |' in text
    assert 'Where the models break' in text
    assert 'trust checks (fast) at 4/255 on 10 image(s)' in text
    # the evaluations went through tools/test.py --eval sea
    summaries = list((work / 'eval').glob('*/sea/summary.json'))
    assert len(summaries) == 4
    with open(summaries[0]) as f:
        summary = json.load(f)
    assert summary['metrics']['sea/n_images'] == 10
    assert osp.isfile(work / 'data' / 'meta.json')
