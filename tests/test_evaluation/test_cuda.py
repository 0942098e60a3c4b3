"""The SEA test loop on a CUDA device (skipped without one)."""
import pytest

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_sea_evaluation_with_amp_on_cuda(trained_tiny, tmp_path, amp):
    import json

    from tests.conftest import load_tool
    metrics = load_tool('test')([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path), '--eval', 'sea', '--eps', '4', '--n-iter', '6', '--amp',
        amp, '--channels-last'
    ])
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['device'].startswith('cuda')
    assert summary['precision']['attack'] == amp
    assert summary['precision']['result'] == 'fp32'
    assert 0 <= metrics['sea/eps4/worst/aAcc'] <= metrics['sea/clean/aAcc']
