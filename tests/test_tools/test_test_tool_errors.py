"""Bad input to ``tools/test.py``: one ``error:`` line, a non-zero exit, no
finished result lost.

Every ``tools/test.py`` case of the catalogue in ``docs/errors.md`` is one
parameter of :func:`test_test_tool_refuses` (the case id is the first
column of the catalogue; ``test_error_catalogue.py`` keeps both in step).
The tool runs in-process through its ``main()``; a few cases also run as a
real process, where exit status and stderr matter. The shared helpers are
in ``bad_input.py``, the fixtures (``ctx``, ``clean_env``) in
``conftest.py``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation import SEATestLoop
from ..conftest import load_tool
from .bad_input import (LAUNCHER_VARS, QUICK, REPO, Case, check_message,
                        run_tool, save_config, snapshot)

pytestmark = pytest.mark.usefixtures('clean_env')


def _t(c, *extra, config=None, ckpt=None, work=True):
    """A tools/test.py command line."""
    argv = [config or c.cfg, ckpt or c.ckpt]
    if work:
        argv += ['--work-dir', c.work]
    return argv + list(extra)


UNITS = ('radii are given in units of 1/255 and must be in [0, 255], e.g. '
         '--eps 4 8 12 16')
TEST_CASES = [
    Case(
        'eps-fraction', lambda c: _t(c, *QUICK, '--eps', '0.03'),
        lambda c: 'error: --eps 0.03: radii are in units of 1/255, so 0.03 '
        'means 0.03/255 = 0.000118, which looks like a fraction: for 8/255 '
        '(= 0.0314) write --eps 8; if you do mean 0.03/255, add '
        '--allow-tiny-eps'),
    Case('eps-negative', lambda c: _t(c, *QUICK, '--eps', '-1'),
         lambda c: f'error: --eps -1: {UNITS}'),
    Case('eps-above-255', lambda c: _t(c, *QUICK, '--eps', '300'),
         lambda c: f'error: --eps 300: {UNITS}'),
    Case('eps-nan', lambda c: _t(c, *QUICK, '--eps', 'nan'),
         lambda c: f'error: --eps nan: {UNITS}'),
    Case(
        'norm-l2-no-eps', lambda c: _t(c, '--eval', 'sea', '--norm', 'l2'),
        lambda c: 'error: --norm l2 needs --eps with l2 radii of the [0, 1] '
        'image, e.g. --eps 0.25 0.5 1 (the l_inf defaults 4 8 12 16 /255 do '
        'not carry over; docs/attacks.md, "The l2 threat model")'),
    Case(
        'norm-l2-negative',
        lambda c: _t(c, *QUICK, '--norm', 'l2', '--eps', '-0.5'),
        lambda c: 'error: --eps -0.5: an l2 radius must be a finite number '
        '>= 0, e.g. --norm l2 --eps 0.5'),
    Case(
        'norm-l2-square',
        lambda c: _t(c, '--eval', 'sea', '--n-iter', '3', '--norm', 'l2',
                     '--eps', '0.5', '--attacks', 'mask_ce', 'square'),
        lambda c: "error: SEATestLoop: square: PAdam and the square attack "
        "are l_inf attacks, but norm='l2'; use APGD, red-eps or PGD attacks "
        'for l2'),
    Case(
        'eot-0', lambda c: _t(c, *QUICK, '--eot', '0'),
        lambda c: 'error: --eot 0: must be >= 1 (gradient samples per attack '
        'step; 1 for deterministic models)'),
    Case('max-images-0', lambda c: _t(c, *QUICK, '--max-images', '0'),
         lambda c: 'error: --max-images 0: must be >= 1'),
    Case('n-iter-0', lambda c: _t(c, *QUICK, '--n-iter', '0'),
         lambda c: 'error: --n-iter 0: must be >= 1'),
    Case(
        'n-iter-2', lambda c: _t(c, '--eval', 'sea', '--n-iter', '2'),
        lambda c: 'error: --n-iter 2: mask_ce (red-eps APGD, as in SEA) '
        'splits its iterations over three radii and needs --n-iter >= 3'),
    Case('log-interval-0', lambda c: _t(c, *QUICK, '--log-interval', '0'),
         lambda c: 'error: --log-interval 0: must be >= 1'),
    Case('attack-unknown', lambda c: _t(c, *QUICK, '--attacks', 'fgsm'),
         lambda c:
         ("error: --attacks: unknown attack 'fgsm': use ", 'segpgd')),
    Case(
        'attack-twice', lambda c: _t(c, *QUICK, '--attacks', 'js', 'js'),
        lambda c: "error: --attacks js js: 'js' is given twice; give each "
        'attack once'),
    Case(
        'attack-same-twice',
        lambda c: _t(c, *QUICK, '--attacks', 'mask_ce', 'red_eps:mask_ce'),
        lambda c: "error: --attacks mask_ce red_eps:mask_ce: 'mask_ce' and "
        "'red_eps:mask_ce' are the same attack; give each attack once"),
    Case(
        'attack-restart-bad', lambda c: _t(c, *QUICK, 'js#0'),
        lambda c: "error: --attacks: unknown attack 'js#0': a restart is "
        'NAME#K with K >= 2 (the bare NAME is the first start; e.g. '
        'apgd:mask_ce#2)'),
    Case('version-and-attacks',
         lambda c: _t(c, *QUICK, '--sea-version', '2024'),
         lambda c: 'error: give either --sea-version or --attacks, not both'),
    Case(
        'version-unknown',
        lambda c: _t(c, '--eval', 'sea', '--sea-version', '2025'),
        lambda c: 'error: --sea-version 2025: use one of recommended (R1, '
        'the default), thorough (T2), T1 (the first thorough preset), 2023 '
        '(the paper), 2024'),
    Case(
        'class-weights-unused',
        lambda c: _t(c, '--eval', 'sea', '--class-weights', '1', '2', '3'),
        lambda c: 'error: --class-weights: only the mask_ce_bal attack uses '
        'class weights, and this run does not (use --sea-version 2024 or '
        '--attacks mask_ce_bal ...)'),
    Case(
        'class-weights-not-numbers',
        lambda c: _t(c, '--eval', 'sea', '--class-weights', 'a', 'b'),
        lambda c: 'error: --class-weights a b: give train, test, image, or '
        'one number per class'),
    Case(
        'class-weights-count',
        lambda c: _t(c, '--eval', 'sea', '--n-iter', '3', '--eps', '4',
                     '--attacks', 'mask_ce_bal', '--class-weights', '1', '2'),
        lambda c: 'error: class_weights must be 3 finite numbers >= 0 (one '
        'per class), got 2: [1.0, 2.0]'),
    Case(
        'class-weights-train-set-missing',
        lambda c: _t(c, '--eval', 'sea', '--n-iter', '3', '--eps', '4',
                     '--sea-version', '2024', '--cfg-options',
                     f'train_dataloader.dataset.data_root={c.root}/nope'),
        lambda c: 'error: the dataset whose labels give the class weights of '
        'mask_ce_bal could not be built: [Errno 2] No such file or '
        f"directory: '{c.root}/nope/img_dir/train'. Fix its config, or give "
        'the weights (--class-weights W1 W2 ... or image)'),
    Case(
        'tta-flag', lambda c: _t(c, *QUICK, '--tta'),
        lambda c: 'error: --tta (test-time augmentation) is not supported '
        'with --eval sea: SEA attacks the plain test-time prediction; leave '
        'out --tta'),
    Case(
        'tta-pipeline', lambda c: _t(c, *QUICK, config=c.tta_pipe_cfg),
        lambda c: ('error: SEA attacks the plain test-time prediction, but '
                   'the test pipeline holds TestTimeAug',
                   'test_dataloader.dataset.pipeline = test_pipeline')),
    Case(
        'tta-model', lambda c: _t(c, *QUICK, config=c.tta_model_cfg),
        lambda c: 'error: the model is a SegTTAModel (test-time '
        'augmentation), which SEA does not support: use the plain '
        'segmentor (tta_model.module) as model'),
    Case(
        'tta-not-configured', lambda c: _t(c, '--tta'),
        lambda c: f'error: --tta: {c.cfg} has no tta_pipeline and tta_model '
        "(MMSeg's dataset and model bases define them)"),
    Case(
        'sea-option-without-eval',
        lambda c: _t(c, '--eps', '8', '--max-images', '2'),
        lambda c: "error: --eps, --max-images: only with --eval sea (or a "
        "config with test_cfg=dict(type='SEATestLoop', ...))"),
    Case(
        'config-missing',
        lambda c: _t(c, *QUICK, config=str(c.root / 'nope.py')),
        lambda c: f"error: config file '{c.root / 'nope.py'}' does not "
        'exist'),
    Case(
        'no-test-dataloader', lambda c: _t(c, *QUICK, config=c.no_test_cfg),
        lambda c: f'error: {c.no_test_cfg} has no test_dataloader: set one '
        '(e.g. test_dataloader = val_dataloader in the config) to say which '
        'images to evaluate'),
    Case(
        'checkpoint-missing',
        lambda c: _t(c, *QUICK, ckpt=str(c.root / 'nope.pth')),
        lambda c: f"error: checkpoint '{c.root / 'nope.pth'}' does not "
        'exist'),
    Case(
        'checkpoint-directory', lambda c: _t(c, *QUICK, ckpt=str(c.root)),
        lambda c: f"error: checkpoint '{c.root}' is a directory, not a "
        'file'),
    Case(
        'checkpoint-empty', lambda c: _t(c, *QUICK, ckpt=c.empty_ckpt),
        lambda c: f'error: checkpoint {c.empty_ckpt} is empty (0 bytes): an '
        'interrupted download or save? Download or save it again'),
    Case(
        'checkpoint-truncated', lambda c: _t(c, *QUICK, ckpt=c.truncated_ckpt),
        lambda c: (f'error: checkpoint {c.truncated_ckpt} is truncated or '
                   'corrupt (an incomplete zip archive of ',
                   'Download or save it again')),
    Case(
        'checkpoint-not-pytorch', lambda c: _t(c, *QUICK, ckpt=c.random_ckpt),
        lambda c: f'error: checkpoint {c.random_ckpt} is not a PyTorch '
        "checkpoint (neither a zip archive nor a pickle: it starts with "
        "b'not '); is it the right file?"),
    Case(
        'checkpoint-unsafe', lambda c: _t(c, *QUICK, ckpt=c.unsafe_ckpt),
        lambda c: (f'error: checkpoint {c.unsafe_ckpt} was not loaded: it '
                   'holds Python objects that safe loading', 'refuses: '
                   'argparse.Namespace', f'--trust-checkpoint '
                   f'{c.unsafe_ckpt} to tools/train.py or tools/test.py')),
    Case(
        'checkpoint-torchscript', lambda c: _t(c, *QUICK, ckpt=c.script_ckpt),
        lambda c: (f'error: checkpoint {c.script_ckpt} was not loaded: it is '
                   'a TorchScript archive (torch.jit.save), not a checkpoint',
                   f'--trust-checkpoint {c.script_ckpt} to tools/train.py')),
    Case(
        'work-dir-is-file',
        lambda c: _t(c, *QUICK, '--work-dir', c.afile, work=False),
        lambda c: f'error: --work-dir {c.afile}: is a file, not a '
        'directory'),
    Case(
        'work-dir-under-file',
        lambda c: _t(c, *QUICK, '--work-dir', c.afile + '/sub', work=False),
        lambda c: f'error: --work-dir {c.afile}/sub: cannot be created: '
        f'{c.afile} is a file, not a directory'),
    Case(
        'work-dir-unwritable', lambda c: _t(
            c, *QUICK, '--work-dir', '/proc/mmseg_robust_test', work=False),
        lambda c: ('error: --work-dir /proc/mmseg_robust_test: cannot '
                   'create or write this directory (', )),
    Case('out-is-file', lambda c: _t(c, *QUICK, '--out', c.afile),
         lambda c: f'error: --out {c.afile}: is a file, not a directory'),
    Case(
        'launcher-pytorch-without-torchrun',
        lambda c: _t(c, *QUICK, '--launcher', 'pytorch'),
        lambda c: 'error: --launcher pytorch needs the environment its '
        'launcher sets, but RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are '
        'not set: start the tool with torchrun (tools/dist_train.sh / '
        'tools/dist_test.sh CONFIG ... NUM_PROCESSES do that); for one '
        'process leave out --launcher'),
    Case(
        'launcher-slurm-without-srun',
        lambda c: _t(c, *QUICK, '--launcher', 'slurm'), lambda c:
        ('error: --launcher slurm needs the environment its '
         'launcher sets, but SLURM_PROCID, SLURM_NTASKS, '
         'SLURM_NODELIST are not set: start the tool with srun', )),
    Case(
        'data-root-missing',
        lambda c: _t(c, *QUICK, '--cfg-options',
                     f'test_dataloader.dataset.data_root={c.root}/nope'),
        lambda c: 'error: the test dataset could not be built: [Errno 2] '
        f"No such file or directory: '{c.root}/nope/img_dir/val'. Check "
        'data_root, data_prefix and ann_file of test_dataloader.dataset'),
    Case(
        'dataset-empty',
        lambda c: _t(c, *QUICK, '--cfg-options',
                     f'test_dataloader.dataset.data_root={c.empty_data}'),
        lambda c: 'error: the test dataset is empty: check data_root, '
        'data_prefix and ann_file of test_dataloader.dataset'),
    Case(
        'ignore-index-disagree', lambda c:
        _t(c, *QUICK, '--cfg-options', 'test_cfg.type=SEATestLoop',
           'test_cfg.ignore_index=3', 'test_evaluator.ignore_index=4'),
        lambda c: 'error: SEATestLoop has ignore_index=3 but SEAMetric has '
        'ignore_index=4: the attacks and the metric must ignore the same '
        'label; set it in one place (test_evaluator)'),
    Case(
        'dataset-concat', lambda c: _t(c, *QUICK, config=c.concat_cfg),
        lambda c: 'error: SEA evaluates one plain dataset, but '
        'test_dataloader.dataset is a ConcatDataset: per-image results are '
        'keyed by the index of each image in its own dataset, which '
        'restarts at 0 in every part of a wrapper. Evaluate each part in '
        'its own run (a config whose test_dataloader.dataset is that part, '
        'and its own --work-dir)'),
    Case(
        'pipeline-without-annotations',
        lambda c: _t(c, *QUICK, config=c.no_ann_cfg), lambda c:
        ('error: ', 'val_000.png has no ground-truth labels '
         "(gt_sem_seg): SEA needs them; add dict(type="
         "'LoadAnnotations') to the test pipeline, before "
         'PackSegInputs')),
    Case(
        'pipeline-without-pack', lambda c: _t(c, *QUICK, config=c.no_pack_cfg),
        lambda c: 'error: SEATestLoop needs a test pipeline that ends with '
        'PackSegInputs (to carry the dataset index of each image); the '
        'pipeline is [LoadImageFromFile, LoadAnnotations]'),
    Case(
        'labels-out-of-range',
        lambda c: _t(c, *QUICK, '--cfg-options',
                     f'test_dataloader.dataset.data_root={c.bad_labels}'),
        lambda c: ('error: labels out of range: the label map of ',
                   f'({c.bad_label_file}) holds [7], but the dataset has 3 '
                   'classes (0-2) and ignore_index 255. Check the classes, '
                   'reduce_zero_label and ignore_index')),
    Case(
        'model-dataset-classes',
        lambda c: _t(c, *QUICK, config=c.four_classes_cfg),
        lambda c: 'error: the model predicts 3 classes but the test dataset '
        'has 4 (background, stripe, blob, sky): check '
        'model.decode_head.num_classes and the classes (metainfo) of '
        'test_dataloader.dataset (a model trained with an extra class is '
        "evaluated with type='ClassSubsetEncoderDecoder', "
        'drop_classes=[...])'),
    Case('test-scale-not-positive', lambda c: _t(c, '--test-scale', '0', '5'),
         lambda c: 'error: --test-scale 0 5: both must be positive'),
    Case(
        'test-scale-without-resize',
        lambda c: _t(c, '--test-scale', '64', '32'),
        lambda c: 'error: --test-scale 64 32: the test pipeline has no '
        'Resize with a scale to change'),
    Case(
        'surrogate-checks-none', lambda c: _t(c, *QUICK, '--checks', 'none',
                                              '--surrogate', c.cfg, c.ckpt),
        lambda c: 'error: --surrogate is for the transfer check of the '
        'trust report, which --checks none turns off: leave out one of them'),
    Case(
        'surrogate-config-missing', lambda c: _t(
            c, *QUICK, '--surrogate', str(c.root / 'nope.py'), c.ckpt),
        lambda c: f"error: --surrogate: config file '{c.root / 'nope.py'}' "
        'does not exist'),
    Case(
        'surrogate-checkpoint-missing',
        lambda c: _t(c, *QUICK, '--surrogate', c.cfg, str(c.root / 'no.pth')),
        lambda c: f"error: --surrogate: checkpoint '{c.root / 'no.pth'}' "
        'does not exist'),
    Case(
        'surrogate-does-not-fit',
        lambda c: _t(c, *QUICK, '--surrogate', c.four_class_model_cfg, c.ckpt),
        lambda c: (f'error: --surrogate: checkpoint {c.ckpt} does not fit '
                   'the model of the config', 'shape mismatches')),
]


@pytest.mark.parametrize('case', TEST_CASES, ids=lambda case: case.id)
def test_test_tool_refuses(case, ctx):
    check_message(run_tool('test', case.argv(ctx)), case.expected(ctx))


# -- nothing finished is lost -----------------------------------------------
#: A quick SEA run with class weights (they are stored beside the results).
FINISHED = [
    '--eval', 'sea', '--n-iter', '3', '--eps', '4', '--attacks', 'js',
    'mask_ce_bal', '--max-images', '2', '--class-weights'
]


@pytest.fixture(scope='module')
def finished(ctx, tmp_path_factory):
    """A finished quick SEA run on 2 images: its results folder."""
    work = tmp_path_factory.mktemp('finished')
    load_tool('test')(
        _t(ctx, *FINISHED, '1', '1', '1', work=False) +
        ['--work-dir', str(work)])
    assert (work / 'sea' / 'class_weights.json').is_file()
    return work / 'sea'


@pytest.mark.parametrize(
    'bad', [('--resume', 'truncated'), ('--resume', 'unsafe'),
            ('--resume', 'n-iter'), ('--resume', 'class-weights'),
            ('', 'truncated')],
    ids=lambda b: f'{b[0] or "no-resume"}-{b[1]}')
def test_bad_input_keeps_finished_results(bad, ctx, finished, tmp_path):
    """A bad checkpoint or other settings found on (re)starting an
    evaluation leave the earlier results (class weights included) as they
    are."""
    sea = tmp_path / 'sea'
    shutil.copytree(finished, sea)
    before = snapshot(sea)
    flag, what = bad
    ckpt = {
        'unsafe': ctx.unsafe_ckpt,
        'truncated': ctx.truncated_ckpt
    }.get(what, ctx.ckpt)
    weights = ['1', '2', '1'] if what == 'class-weights' else ['1', '1', '1']
    argv = _t(
        ctx, *FINISHED, *weights, ckpt=ckpt,
        work=False) + ['--work-dir', str(tmp_path)]
    if what == 'n-iter':
        argv += ['--n-iter', '4']
    if flag:
        argv.append(flag)
    message = run_tool('test', argv)
    changed = {
        'n-iter':
        "{'n_iter': (3, 4)}",
        'class-weights':
        "{'class_weights': ({'source': 'given', "
        "'weights': [1.0, 1.0, 1.0]}, {'source': 'given', 'weights': "
        '[1.0, 2.0, 1.0]})}'
    }
    if what in changed:
        check_message(
            message, f'error: cannot resume from {sea}/rank0.jsonl: it '
            f'was produced with other settings (old, new): {changed[what]}'
            '. Use the same settings, or another --work-dir to start '
            'afresh.')
    else:
        check_message(message, (f'error: checkpoint {ckpt} ', ))
    assert snapshot(sea) == before


def test_error_mid_evaluation_keeps_the_finished_images(ctx, tmp_path):
    """Labels out of range in the third image: the first two stay recorded,
    and after fixing the labels --resume attacks only the rest."""
    data = tmp_path / 'data'
    shutil.copytree(ctx.data, data)
    labels = data / 'ann_dir' / 'val'
    shutil.copy(ctx.bad_label_file, labels / 'val_002.png')
    argv = _t(
        ctx, *QUICK, work=False) + [
            '--work-dir',
            str(tmp_path), '--cfg-options',
            f'test_dataloader.dataset.data_root={data}'
        ]
    check_message(
        run_tool('test', argv),
        ('error: labels out of range: the label map of ',
         'val_002.png) holds [7]'))
    records = (tmp_path / 'sea' / 'rank0.jsonl').read_text().splitlines()
    assert [json.loads(r)['idx'] for r in records[1:]] == [0, 1]
    shutil.copy(
        Path(ctx.data) / 'ann_dir' / 'val' / 'val_002.png',
        labels / 'val_002.png')
    attacked = []
    original = SEATestLoop.attack_batch

    def counting(self, data_batch, keys):
        attacked.extend(keys)
        return original(self, data_batch, keys)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SEATestLoop, 'attack_batch', counting)
        metrics = load_tool('test')(argv + ['--resume'])
    assert attacked == [2, 3]
    assert metrics['sea/n_images'] == 4


# -- --debug, and the exit of a real process --------------------------------
def test_debug_keeps_the_traceback(ctx, monkeypatch):
    argv = _t(ctx, *QUICK, '--cfg-options',
              f'test_dataloader.dataset.data_root={ctx.empty_data}')
    with pytest.raises(ConfigError, match='test dataset is empty'):
        load_tool('test')(argv + ['--debug'])
    monkeypatch.setenv('MMSEG_ROBUST_DEBUG', '1')
    with pytest.raises(ConfigError, match='test dataset is empty'):
        load_tool('test')(argv)


def test_a_bug_keeps_its_traceback(ctx, monkeypatch):
    """Only the package's user errors become an error line."""

    def bug(self, data, keys):
        raise ValueError('a bug')

    monkeypatch.setattr(SEATestLoop, 'attack_batch', bug)
    with pytest.raises(ValueError, match='a bug'):
        load_tool('test')(_t(ctx, *QUICK, '--max-images', '1'))


def _process(tool, argv, **env):
    environ = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(REPO / 'tools' / f'{tool}.py')] + argv,
        capture_output=True,
        text=True,
        timeout=300,
        env=environ)


@pytest.mark.parametrize('case_id,debug',
                         [('launcher-pytorch-without-torchrun', False),
                          ('dataset-empty', False), ('dataset-empty', True)])
def test_process_exit(case_id, debug, ctx):
    """As a real process: status 1, the error line last on stderr, no
    traceback (unless MMSEG_ROBUST_DEBUG=1)."""
    case = next(c for c in TEST_CASES if c.id == case_id)
    env = {'MMSEG_ROBUST_DEBUG': '1'} if debug else {}
    proc = _process('test', case.argv(ctx), **env)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    if debug:
        assert 'Traceback' in proc.stderr
        assert last.startswith('mmseg_robust.errors.ConfigError: the test '
                               'dataset is empty')
    else:
        assert 'Traceback' not in proc.stderr
        check_message(last, case.expected(ctx))


# -- --trust-checkpoint, --test-scale, the curve title ----------------------
def test_trust_checkpoint(ctx, tmp_path):
    argv = [ctx.cfg, ctx.unsafe_ckpt, '--work-dir', str(tmp_path)]
    with pytest.raises(SystemExit, match='--trust-checkpoint'):
        load_tool('test')(argv)
    with pytest.warns(UserWarning, match='fully unpickled'):
        metrics = load_tool('test')(
            argv + ['--trust-checkpoint', ctx.unsafe_ckpt])
    assert 0 <= metrics['mIoU'] <= 100


def test_test_scale(ctx, tmp_path, monkeypatch):
    from mmengine.runner import Runner
    cfg = Config.fromfile(ctx.cfg)
    pipeline = cfg.test_dataloader.dataset.pipeline
    pipeline.insert(1, dict(type='Resize', scale=(32, 32), keep_ratio=True))
    path = save_config(cfg, tmp_path / 'resize.py')
    seen = []
    original = Runner.from_cfg.__func__

    def spy(cls, cfg):
        seen.append(cfg)
        return original(cls, cfg)

    monkeypatch.setattr(Runner, 'from_cfg', classmethod(spy))
    metrics = load_tool('test')([
        path, ctx.ckpt, '--work-dir',
        str(tmp_path), '--test-scale', '16', '16'
    ])
    assert 'mIoU' in metrics
    resize = seen[0].test_dataloader.dataset.pipeline[1]
    assert resize['type'] == 'Resize' and tuple(resize['scale']) == (16, 16)


def test_runner_type_is_honoured(ctx, tmp_path):
    """A config's ``runner_type`` builds that runner, as in MMSeg's tools
    (and this package's tools/train.py)."""
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS

    built = []

    class RecordingRunner(Runner):

        def __init__(self, *args, **kwargs):
            built.append(type(self).__name__)
            super().__init__(*args, **kwargs)

        @classmethod
        def from_cfg(cls, cfg):
            built.append('from_cfg')
            return super().from_cfg(cfg)

    name = f'RecordingRunner{tmp_path.name}'
    RUNNERS.register_module(name=name, module=RecordingRunner)
    metrics = load_tool('test')([
        ctx.cfg, ctx.ckpt, '--work-dir',
        str(tmp_path), '--cfg-options', f'runner_type={name}'
    ])
    assert 'mIoU' in metrics
    assert built and built[-1] == 'RecordingRunner'


def test_tiny_eps_when_asked_and_curve_title(ctx, tmp_path, monkeypatch):
    import mmseg_robust.visualization as vis
    titles = []
    original = vis.plot_robustness_curve

    def spy(metrics, out_file, title=None, **kwargs):
        titles.append(title)
        return original(metrics, out_file, title=title, **kwargs)

    monkeypatch.setattr(vis, 'plot_robustness_curve', spy)
    metrics = load_tool('test')(
        _t(ctx,
           *QUICK,
           '--eps',
           '0.5',
           '--allow-tiny-eps',
           '--max-images',
           '1',
           work=False) + ['--work-dir', str(tmp_path)])
    assert 'sea/eps0.5/worst/aAcc' in metrics
    assert titles == [f'{Path(ctx.cfg).stem} ({Path(ctx.ckpt).name})']


def test_class_subset_model_is_not_refused(ctx, tmp_path):
    """A head with an extra class left out at test time
    (ClassSubsetEncoderDecoder) predicts the dataset's classes: no error."""
    cfg = Config.fromfile(ctx.cfg)
    cfg.model.type = 'ClassSubsetEncoderDecoder'
    cfg.model.drop_classes = [3]
    cfg.model.decode_head.num_classes = 4
    path = save_config(cfg, tmp_path / 'subset.py')
    state = torch.load(ctx.ckpt, weights_only=False)
    sd = state['state_dict']
    sd['decode_head.conv_seg.weight'] = torch.cat([
        sd['decode_head.conv_seg.weight'],
        torch.zeros(1, *sd['decode_head.conv_seg.weight'].shape[1:])
    ])
    sd['decode_head.conv_seg.bias'] = torch.cat(
        [sd['decode_head.conv_seg.bias'],
         torch.full((1, ), -10.)])
    ckpt = str(tmp_path / 'subset.pth')
    torch.save(state, ckpt)
    metrics = load_tool('test')(
        _t(ctx,
           *QUICK,
           '--max-images',
           '1',
           config=path,
           ckpt=ckpt,
           work=False) + ['--work-dir', str(tmp_path)])
    assert metrics['sea/n_images'] == 1
