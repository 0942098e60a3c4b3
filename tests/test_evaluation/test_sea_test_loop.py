"""SEATestLoop through tools/test.py --eval sea on a tiny trained model."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmseg_robust.attacks import SEA, parse_attack, sea_version
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation import SIZE_BUCKETS, SEATestLoop, size_buckets
from mmseg_robust.models import AttackBatch
from ..conftest import interrupt_after, load_tool

REPO = Path(__file__).resolve().parents[2]
SEA_ARGS = ['--eval', 'sea', '--eps', '4', '12', '--n-iter', '6']


def _test(trained, work_dir, *extra):
    main = load_tool('test')
    return main(
        [trained['config'], trained['ckpt'], '--work-dir',
         str(work_dir)] + SEA_ARGS + list(extra))


@pytest.fixture(scope='module')
def reference(trained_tiny, tmp_path_factory):
    """One uninterrupted run."""
    work = tmp_path_factory.mktemp('sea_ref')
    metrics = _test(trained_tiny, work)
    return metrics, work


def test_outputs_table_json_png(reference):
    metrics, work = reference
    sea_dir = work / 'sea'
    summary = json.loads((sea_dir / 'summary.json').read_text())
    assert summary['metrics'] == pytest.approx(metrics)
    assert summary['settings']['eps'] == ['4', '12']
    assert summary['settings']['n_iter'] == 6
    # the protocol is named, so numbers are not compared across versions;
    # the default is the recommended preset
    default = sea_version(None)
    assert summary['settings']['version'] == default.name == 'SEA-R1'
    assert summary['settings']['tracked'] == {
        a.name: a.track
        for a in map(parse_attack, default.attacks)
    }
    assert summary['settings']['chain_radii'] is True
    assert summary['protocol'].startswith('SEA-R1, 6 it./attack')
    assert summary['versions']['torch'] == torch.__version__
    assert summary['timing']['attack_seconds_per_image'] > 0
    assert 'worst aAcc' in summary['tables']['summary']
    png = (sea_dir / 'robustness_curve.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    records = (sea_dir / 'rank0.jsonl').read_text().splitlines()
    assert len(records) == 1 + 4  # header + one line per image


def test_numbers_are_consistent(reference, trained_tiny):
    metrics, _ = reference
    # the attack does something on this model, and more at 12/255
    clean = metrics['sea/clean/aAcc']
    assert metrics['sea/eps4/worst/aAcc'] <= clean
    assert metrics['sea/eps12/worst/aAcc'] < clean - 1.0
    # monotone curves (chained radii): aAcc and mIoU, both aggregations
    for m in ('aAcc', 'mIoU', 'mAcc'):
        assert metrics[f'sea/eps12/worst/{m}'] <= \
            metrics[f'sea/eps4/worst/{m}'] <= metrics[f'sea/clean/{m}']
    assert metrics['sea/eps12/worst_miou/mIoU'] <= \
        metrics['sea/eps4/worst_miou/mIoU']
    for e in ('4', '12'):
        assert metrics[f'sea/eps{e}/worst_miou/mIoU'] <= \
            metrics[f'sea/eps{e}/worst/mIoU']
    # worst case never above any single attack
    for e in ('4', '12'):
        for name in sea_version(None).attacks:
            assert metrics[f'sea/eps{e}/worst/aAcc'] <= \
                metrics[f'sea/eps{e}/{name}/aAcc']


def test_clean_numbers_equal_stock_mmseg_test(reference, trained_tiny,
                                              tmp_path):
    metrics, _ = reference
    main = load_tool('test')
    stock = main([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path)
    ])
    assert stock['aAcc'] == pytest.approx(metrics['sea/clean/aAcc'])
    assert stock['mIoU'] == pytest.approx(metrics['sea/clean/mIoU'])


def _bucket_key(key):
    return any(key.endswith(f'_{b}') for b in SIZE_BUCKETS)


def test_per_image_miou_and_object_sizes(reference):
    """Per-image mIoU and accuracy by object size, end to end: in the
    metrics and summary.json, a printed table and robustness_by_size.png;
    each record's buckets are those of its label file and add up to its
    valid pixels, and each prediction's correct pixels per bucket add up
    to its correct pixels."""
    import cv2
    metrics, work = reference
    sea_dir = work / 'sea'
    summary = json.loads((sea_dir / 'summary.json').read_text())
    rows = ['clean'] + [
        f'eps{e}/{n}' for e in ('4', '12')
        for n in ('worst', 'worst_miou') + sea_version(None).attacks
    ]
    for row in rows:
        assert 0 <= summary['metrics'][f'sea/{row}/mImgIoU'] <= 100
    buckets = [b for b in SIZE_BUCKETS if metrics[f'sea/n_px_{b}'] > 0]
    assert buckets  # the toy labels have objects
    for row in rows:
        for b in SIZE_BUCKETS:
            assert (f'sea/{row}/aAcc_{b}' in summary['metrics']) == (
                b in buckets)
    table = summary['tables']['size']
    assert 'mIoU/img' in table and all(f' {b} ' in table for b in buckets)
    png = (sea_dir / 'robustness_by_size.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    records = [
        json.loads(line)
        for line in (sea_dir / 'rank0.jsonl').read_text().splitlines()[1:]
    ]
    total_valid = 0
    for rec in records:
        assert sum(rec['size']['valid']) == rec['valid']
        total_valid += rec['valid']
        ann = rec['img_path'].replace('img_dir', 'ann_dir')
        label = cv2.imread(ann, cv2.IMREAD_UNCHANGED)
        assert size_buckets(label, 255)[1] == rec['size']
        entries = [rec['clean']] + [
            entry for radius in rec['eps'].values()
            for entry in radius.values()
        ]
        for entry in entries:
            assert sum(entry['size_correct']) == entry['correct']
    assert sum(metrics[f'sea/n_px_{b}'] for b in SIZE_BUCKETS) == total_valid


def test_resume_from_records_without_object_sizes(reference, trained_tiny,
                                                  tmp_path):
    """Results written before object sizes existed resume: every other
    metric as before (per-image mIoU too), the bucket keys and their plot
    left out."""
    ref_metrics, work = reference
    shutil.copytree(work / 'sea', tmp_path / 'sea')
    (tmp_path / 'sea' / 'robustness_by_size.png').unlink()
    path = tmp_path / 'sea' / 'rank0.jsonl'
    lines = path.read_text().splitlines()
    old = [lines[0]]
    for line in lines[1:]:
        rec = json.loads(line)
        rec.pop('size')
        for entry in [rec['clean']] + [
                e for radius in rec['eps'].values() for e in radius.values()
        ]:
            entry.pop('size_correct')
        old.append(json.dumps(rec))
    path.write_text('\n'.join(old) + '\n')
    metrics = _test(trained_tiny, tmp_path, '--resume')
    expected = {k: v for k, v in ref_metrics.items() if not _bucket_key(k)}
    assert len(expected) < len(ref_metrics)
    assert metrics == pytest.approx(expected)
    assert 'sea/eps12/worst/mImgIoU' in metrics
    assert not (tmp_path / 'sea' / 'robustness_by_size.png').exists()
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert 'mIoU/img' in summary['tables']['size']


def test_matches_direct_attack(reference, trained_tiny):
    """The loop's worst case equals running SEA directly, radius after
    radius (each starting from the smaller one's worst case), with the
    per-image seeds the loop documents."""
    from mmengine.runner import Runner
    metrics, work = reference
    cfg = Config.fromfile(trained_tiny['config'])
    cfg.load_from = trained_tiny['ckpt']
    cfg.work_dir = str(work / 'direct')
    cfg.test_cfg = dict(type='SEATestLoop', eps=[12 / 255], n_iter=6)
    cfg.test_evaluator = dict(type='SEAMetric')
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    loop = runner.test_loop
    model = runner.model.eval()
    correct = valid = 0
    for data in loop.dataloader:
        batch = AttackBatch.from_data(model, data)
        seeds = [
            loop.image_seed(int(s.metainfo['sample_idx']))
            for s in data['data_samples']
        ]
        res = SEA(
            batch.model, 4 / 255, n_iter=6).curve(
                batch.x,
                batch.y, [4 / 255, 12 / 255],
                mask=batch.mask,
                seed=seeds)[-1]
        correct += int(res.correct.sum())
        valid += int(res.valid.sum())
    assert metrics['sea/eps12/worst/aAcc'] == pytest.approx(
        round(100 * correct / valid, 2))


def test_resume_after_interruption_gives_identical_numbers(
        reference, trained_tiny, tmp_path, monkeypatch):
    ref_metrics, _ = reference
    original = SEATestLoop.attack_batch
    interrupt_after(monkeypatch, 2, lambda: _test(trained_tiny, tmp_path))
    results = tmp_path / 'sea' / 'rank0.jsonl'
    lines = results.read_text().splitlines()
    assert len(lines) == 1 + 2  # two images done before the interruption
    # an interrupted write leaves a partial line: it is redone, not fatal
    with open(results, 'a') as f:
        f.write(lines[-1][:40])
    attacked = []

    def counting(self, data, keys):
        attacked.extend(keys)
        return original(self, data, keys)

    monkeypatch.setattr(SEATestLoop, 'attack_batch', counting)
    metrics = _test(trained_tiny, tmp_path, '--resume')
    assert sorted(attacked) == [2, 3]  # only the images not done
    assert metrics == pytest.approx(ref_metrics)


def test_resume_with_other_settings_is_refused(reference, trained_tiny,
                                               tmp_path):
    _, work = reference
    shutil.copytree(work / 'sea', tmp_path / 'sea')
    main = load_tool('test')
    with pytest.raises(
            SystemExit,
            match='error: cannot resume from .* other '
            "settings .*'eps': \\(\\['4', '12'\\], \\['4'\\]\\)"):
        main([
            trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
            str(tmp_path), '--eval', 'sea', '--eps', '4', '--n-iter', '6',
            '--resume'
        ])


def test_resume_identifies_the_checkpoint_by_content(reference, trained_tiny,
                                                     tmp_path):
    """The same weights under another path resume; other weights under the
    same path are refused (never two models in one result)."""
    ref_metrics, work = reference
    shutil.copytree(work / 'sea', tmp_path / 'sea')
    copy = tmp_path / 'copy.pth'
    shutil.copy(trained_tiny['ckpt'], copy)
    main = load_tool('test')
    metrics = main(
        [trained_tiny['config'],
         str(copy), '--work-dir',
         str(tmp_path)] + SEA_ARGS + ['--resume'])
    assert metrics == pytest.approx(ref_metrics)
    state = torch.load(copy, weights_only=False)
    for v in state['state_dict'].values():
        if v.is_floating_point():
            v.mul_(0.5)
    torch.save(state, copy)
    with pytest.raises(
            SystemExit, match='error: cannot resume .*'
            'checkpoint_sha256'):
        main([trained_tiny['config'],
              str(copy), '--work-dir',
              str(tmp_path)] + SEA_ARGS + ['--resume'])


def test_sea_2024_with_training_label_weights(trained_tiny, tmp_path):
    import numpy as np

    from mmseg_robust.attacks import class_weights_from_counts
    metrics = _test(trained_tiny, tmp_path, '--sea-version', '2024',
                    '--max-images', '2', '--table', 'per_radius')
    assert {k.split('/')[2]
            for k in metrics if '/eps4/' in k
            } == {'worst', 'worst_miou', 'mask_ce_bal', 'mask_ce', 'js'}
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['settings']['version'] == 'SEA-2024'
    assert summary['protocol'].startswith('SEA-2024')
    # weights = inverse frequencies of the training labels, counted directly
    import cv2
    counts = np.zeros(3, np.int64)
    for f in (Path(trained_tiny['data_root']) / 'ann_dir' /
              'train').glob('*.png'):
        lab = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).ravel()
        counts += np.bincount(lab[lab != 255], minlength=3)[:3]
    expected = class_weights_from_counts(torch.from_numpy(counts)).tolist()
    stored = json.loads((tmp_path / 'sea' / 'class_weights.json').read_text())
    assert stored['weights'] == pytest.approx(expected, rel=1e-6)
    assert summary['settings']['class_weights']['source'] == 'train'


def test_sea_version_and_attacks_conflict(trained_tiny):
    with pytest.raises(SystemExit, match='not both'):
        load_tool('test')([
            trained_tiny['config'], trained_tiny['ckpt'], '--eval', 'sea',
            '--sea-version', '2024', '--attacks', 'js'
        ])
    with pytest.raises(SystemExit, match='thorough .*2023.*2024'):
        load_tool('test')([
            trained_tiny['config'], trained_tiny['ckpt'], '--eval', 'sea',
            '--sea-version', '2025'
        ])


def test_rerun_without_resume_keeps_old_results(reference, trained_tiny,
                                                tmp_path):
    _test(trained_tiny, tmp_path, '--max-images', '1')
    _test(trained_tiny, tmp_path, '--max-images', '2')
    backups = list((tmp_path / 'sea').glob('rank0.jsonl.*.bak'))
    assert len(backups) == 1


def test_max_images_and_show_dir(trained_tiny, tmp_path):
    metrics = _test(trained_tiny, tmp_path, '--max-images', '2', '--show-dir',
                    'vis', '--attacks', 'segpgd', 'js')
    assert metrics['sea/n_images'] == 2
    assert 'sea/eps4/segpgd/aAcc' in metrics
    assert 'sea/eps4/mask_ce/aAcc' not in metrics
    files = sorted(os.listdir(tmp_path / 'vis'))
    assert files == sorted(f'val_00{i}_{t}.png' for i in (0, 1)
                           for t in ('clean', 'eps4', 'eps12'))


def test_images_with_only_ignored_pixels(trained_tiny, tmp_path):
    data = tmp_path / 'data'
    shutil.copytree(trained_tiny['data_root'], data)
    import cv2
    import numpy as np
    ann = data / 'ann_dir' / 'val' / 'val_001.png'
    label = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(ann), np.full_like(label, 255))
    main = load_tool('test')
    metrics = main([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        f'test_dataloader.dataset.data_root={data}'
    ] + SEA_ARGS)
    assert metrics['sea/n_no_valid'] == 1 and metrics['sea/n_images'] == 4


def test_sea_from_config_without_cli_flag(trained_tiny, tmp_path):
    cfg = Config.fromfile(trained_tiny['config'])
    cfg.test_cfg = dict(
        type='SEATestLoop',
        eps=[4 / 255],
        n_iter=3,
        attacks=['cospgd'],
        max_images=1)
    cfg.test_evaluator = dict(type='SEAMetric')
    path = str(tmp_path / 'sea_cfg.py')
    cfg.dump(path)
    main = load_tool('test')
    metrics = main([path, trained_tiny['ckpt'], '--work-dir', str(tmp_path)])
    assert set(k.split('/')[2] for k in metrics
               if '/eps4/' in k) == {'worst', 'worst_miou', 'cospgd'}


class TestBadInput:

    def test_config_without_test_dataloader(self, trained_tiny, tmp_path):
        cfg = Config.fromfile(trained_tiny['config'])
        for key in ('test_dataloader', 'test_cfg', 'test_evaluator'):
            cfg.pop(key)
        path = str(tmp_path / 'no_test.py')
        cfg.dump(path)
        with pytest.raises(SystemExit, match='no test_dataloader'):
            load_tool('test')([path, trained_tiny['ckpt']] + SEA_ARGS)

    def test_checkpoint_that_does_not_fit(self, trained_tiny, tmp_path):
        path = str(tmp_path / 'wrong.pth')
        state = torch.load(trained_tiny['ckpt'], weights_only=False)
        sd = state['state_dict']
        sd['decode_head.conv_seg.weight'] = torch.zeros(5, 16, 1, 1)
        sd.pop('backbone.stages.0.0.weight')
        sd['extra.weight'] = torch.zeros(1)
        torch.save(state, path)
        with pytest.raises(SystemExit) as err:
            load_tool('test')(
                [trained_tiny['config'], path, '--work-dir',
                 str(tmp_path)] + SEA_ARGS)
        msg = str(err.value)
        assert 'missing keys (1): backbone.stages.0.0.weight' in msg
        assert 'unexpected keys (1): extra.weight' in msg
        assert 'decode_head.conv_seg.weight: checkpoint (5, 16, 1, 1)' in msg

    def test_missing_checkpoint(self, trained_tiny):
        with pytest.raises(SystemExit, match='does not exist'):
            load_tool('test')([trained_tiny['config'], 'nope.pth'])

    def test_eps_given_as_fraction_is_refused(self, trained_tiny, tmp_path):
        with pytest.raises(
                SystemExit,
                match='looks like a fraction: for '
                '8/255 .* write --eps 8; .* add --allow-tiny-eps'):
            load_tool('test')([
                trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
                str(tmp_path), '--eval', 'sea', '--eps', '0.03', '--n-iter',
                '3', '--max-images', '1'
            ])
        with pytest.raises(SystemExit, match='units of 1/255'):
            load_tool('test')([
                trained_tiny['config'], trained_tiny['ckpt'], '--eval', 'sea',
                '--eps', '-1'
            ])

    def test_unknown_attack(self, trained_tiny):
        with pytest.raises(SystemExit, match='unknown attack'):
            load_tool('test')([
                trained_tiny['config'], trained_tiny['ckpt'], '--eval', 'sea',
                '--attacks', 'fgsm'
            ])

    def test_empty_dataset(self, trained_tiny, tmp_path):
        empty = tmp_path / 'empty'
        (empty / 'img_dir' / 'val').mkdir(parents=True)
        (empty / 'ann_dir' / 'val').mkdir(parents=True)
        with pytest.raises(
                SystemExit, match='error: the test dataset is '
                'empty'):
            load_tool('test')([
                trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
                str(tmp_path), '--cfg-options',
                f'test_dataloader.dataset.data_root={empty}'
            ] + SEA_ARGS)

    def test_wrong_evaluator_in_config(self, trained_tiny, tmp_path):
        from mmengine.runner import Runner
        cfg = Config.fromfile(trained_tiny['config'])
        cfg.test_cfg = dict(type='SEATestLoop', eps=[4 / 255], n_iter=3)
        cfg.work_dir = str(tmp_path)
        runner = Runner.from_cfg(cfg)
        with pytest.raises(ConfigError, match="type='SEAMetric'"):
            runner.test_loop  # built lazily


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_two_processes_identical(reference, trained_tiny,
                                             tmp_path):
    ref_metrics, _ = reference
    env = dict(
        os.environ,
        PORT=str(_free_port()),
        OMP_NUM_THREADS='1',
        PYTHON=sys.executable)
    if torch.cuda.device_count() < 2:
        # one process per GPU or none: with fewer GPUs than processes run
        # both on the CPU (gloo) instead of failing in cuda.set_device(1)
        env['CUDA_VISIBLE_DEVICES'] = ''
    proc = subprocess.run(
        [
            'bash',
            str(REPO / 'tools' / 'dist_test.sh'), trained_tiny['config'],
            trained_tiny['ckpt'], '2', '--work-dir',
            str(tmp_path)
        ] + SEA_ARGS,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['world_size'] == 2
    assert summary['metrics'] == pytest.approx(ref_metrics)
    # each rank wrote its own shard
    assert {p.name
            for p in (tmp_path / 'sea').glob('rank*.jsonl')
            } == {'rank0.jsonl', 'rank1.jsonl'}


def test_amp_and_layout_options_are_recorded(trained_tiny, tmp_path,
                                             reference):
    """--amp fp16 on the CPU (bf16 on a torch whose CPU autocast takes no
    float16): the attacks iterate in half precision, the reported
    predictions stay float32 (clean numbers identical to the float32 run),
    and summary.json says so; --channels-last changes no number's
    meaning."""
    from mmseg_robust.attacks.precision import cpu_autocast_supports
    amp = 'fp16' if cpu_autocast_supports(torch.float16) else 'bf16'
    ref_metrics, _ = reference
    metrics = _test(trained_tiny, tmp_path, '--amp', amp, '--channels-last')
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['precision'] == dict(
        attack=amp, result='fp32', channels_last=True, compile=False)
    assert summary['settings']['amp'] == amp
    assert summary['settings']['result_precision'] == 'fp32'
    assert metrics['sea/clean/aAcc'] == ref_metrics['sea/clean/aAcc']
    for eps in ('4', '12'):
        assert metrics[f'sea/eps{eps}/worst/aAcc'] <= metrics['sea/clean/aAcc']
        # the float16 attack is as strong as float32's within a few points
        assert abs(metrics[f'sea/eps{eps}/worst/aAcc'] -
                   ref_metrics[f'sea/eps{eps}/worst/aAcc']) < 5


def test_fp32_results_record_amp_as_before(reference):
    """Results of float32 runs keep ``amp: false`` in their settings, so
    earlier releases' results resume."""
    _, work = reference
    summary = json.loads((work / 'sea' / 'summary.json').read_text())
    assert summary['settings']['amp'] is False
    assert 'result_precision' not in summary['settings']
    assert summary['precision']['attack'] == 'fp32'


def test_l2_evaluation_end_to_end(reference, trained_tiny, tmp_path):
    """``--norm l2 --eps 0.5 2 --eot 2``: l2 radii as typed, monotone worst
    case below each attack, the norm and eot in settings, protocol, tables,
    progress and trust report; an l_inf run's results do not resume as
    l2."""
    metrics = load_tool('test')([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path), '--eval', 'sea', '--norm', 'l2', '--eps', '0.5', '2',
        '--n-iter', '6', '--attacks', 'mask_ce', 'apgd:js', 'segpgd', '--eot',
        '2'
    ])
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['settings']['norm'] == 'l2'
    # the trust report in the l2 ball, at the largest radius
    assert summary['trust']['norm'] == 'l2' and summary['trust']['eps'] == 2
    assert not summary['trust']['flagged']
    assert summary['settings']['eot'] == 2
    assert summary['settings']['eps'] == ['0.5', '2']
    assert summary['protocol'].startswith('custom (l2), 6 it./attack')
    assert 'l2 0.5' in summary['tables']['summary']
    assert '/255' not in summary['tables']['summary']
    acc = [metrics['sea/clean/aAcc']
           ] + [metrics[f'sea/{k}/worst/aAcc'] for k in ('eps0.5', 'eps2')]
    assert acc[0] >= acc[1] >= acc[2]
    assert acc[2] < acc[0]  # a radius of 2 moves a trained tiny model
    for k in ('eps0.5', 'eps2'):
        for name in ('mask_ce', 'apgd:js', 'segpgd'):
            assert metrics[f'sea/{k}/worst/aAcc'] <= \
                metrics[f'sea/{k}/{name}/aAcc']
    from mmseg_robust.evaluation.loops.sea_report import SEAProgress
    assert 'worst l2 0.5: -' in SEAProgress(['0.5'], 1, 1, norm='l2').line(0)
    # l_inf records do not resume as an l2 run
    _, work = reference
    shutil.copytree(work / 'sea', tmp_path / 'linf' / 'sea')
    with pytest.raises(SystemExit, match="other settings .*'norm'"):
        load_tool('test')([
            trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
            str(tmp_path / 'linf'), '--eval', 'sea', '--norm', 'l2', '--eps',
            '4', '12', '--n-iter', '6', '--resume', '--checks', 'none'
        ])


def test_l2_radii_are_checked_as_l2(trained_tiny):
    """The loop checks radii in its norm (an l2 radius may exceed 1, not
    be negative); the protocol names the norm."""
    cfg = Config.fromfile(trained_tiny['config'])
    loop_cfg = dict(eps=[0.5], norm='l2', eot=2, n_iter=4, attacks=['mask_ce'])
    sea = SEA(None, 0.5, norm='l2', eot=2, n_iter=4, attacks=['mask_ce'])
    assert sea.describe() == 'custom (l2), 4 it./attack: mask_ce (tracks ce)'
    with pytest.raises(ConfigError, match='not a valid l2 radius'):
        SEATestLoop(None, cfg.test_dataloader, [dict(type='SEAMetric')],
                    **dict(loop_cfg, eps=[-1.0]))
    with pytest.raises(ConfigError, match='l_inf radius'):
        SEATestLoop(None, cfg.test_dataloader, [dict(type='SEAMetric')],
                    **dict(loop_cfg, eps=[3.0], norm='linf'))


def test_cli_reads_eps_in_the_configs_norm():
    """A config whose SEATestLoop is l2: ``--eps`` is read as l2 radii;
    ``--norm linf`` switches to l_inf (its --eps in units of 1/255), and
    switching the norm without new radii is refused."""
    import runpy

    from mmseg_robust.cli import ToolError
    from mmseg_robust.cli.sea import sea_options
    tool = runpy.run_path(str(REPO / 'tools' / 'test.py'), run_name='tool_m')
    l2_cfg = dict(type='SEATestLoop', norm='l2', eps=[0.5, 1.0])

    def options(*argv, config=l2_cfg):
        args = tool['parse_args'](['c.py', 'k.pth', '--eval', 'sea', *argv])
        return sea_options(args, '/tmp', config)

    assert options('--eps', '1', '2')['eps'] == [1.0, 2.0]
    assert 'eps' not in options()  # the config's own l2 radii stay
    linf = options('--norm', 'linf', '--eps', '4', '8')
    assert linf['norm'] == 'linf' and linf['eps'] == [4 / 255, 8 / 255]
    with pytest.raises(ToolError, match='give --eps in the new'):
        options('--norm', 'linf')
    assert options('--eps', '4', config={})['eps'] == [4 / 255]
