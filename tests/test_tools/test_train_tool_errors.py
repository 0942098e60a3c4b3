"""Bad input to ``tools/train.py`` (with ``AdvTrainingHook``): one
``error:`` line, a non-zero exit, no finished result lost.

Every ``tools/train.py`` case of the catalogue in ``docs/errors.md`` is one
parameter of :func:`test_train_tool_refuses` (the case id is the first
column of the catalogue; ``test_error_catalogue.py`` keeps both in step).
The tool runs in-process through its ``main()``. The shared helpers are in
``bad_input.py``, the fixtures (``ctx``, ``clean_env``) in ``conftest.py``.
"""
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmseg_robust.testing import tiny_runner_cfg
from .bad_input import Case, check_message, run_tool, save_config, snapshot

pytestmark = pytest.mark.usefixtures('clean_env')


# -- tools/train.py with AdvTrainingHook ------------------------------------
@pytest.fixture(scope='module')
def tctx(ctx, trained_tiny, tmp_path_factory):
    """Training configs (1 iteration) and a work dir with a checkpoint."""
    root = tmp_path_factory.mktemp('bad_train')
    t = SimpleNamespace(root=root, c=ctx)

    def config(name, hook=None, **extra):
        hooks = None if hook is None else [
            dict(dict(type='AdvTrainingHook', steps=1), **hook)
        ]
        cfg = tiny_runner_cfg(
            str(root / name),
            trained_tiny['data_root'],
            max_iters=1,
            checkpoint_interval=1,
            custom_hooks=hooks,
            val_interval=10**6)  # never validate
        cfg.update(extra)
        return save_config(cfg, root / f'{name}.py')

    t.cfg = config('at', dict(eps=4 / 255))
    for name, hook in (('eps_units', dict(eps=8)), ('steps_0',
                                                    dict(eps=4 / 255,
                                                         steps=0)),
                       ('loss', dict(eps=4 / 255, loss='cross_entropy')),
                       ('ratio', dict(eps=4 / 255, adv_ratio=1.5)),
                       ('start', dict(eps=4 / 255, start_iter=-1))):
        setattr(t, name, config(name, dict(hook)))
    t.load_random = config(
        'load_random', dict(eps=4 / 255), load_from=ctx.random_ckpt)
    t.amp = config(
        'amp',
        dict(eps=4 / 255),
        optim_wrapper=dict(
            type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.01)))
    # a work dir whose latest checkpoint was cut off while being saved
    t.cut = str(root / 'cut')
    os.makedirs(t.cut)
    good = Path(ctx.ckpt).read_bytes()
    Path(t.cut, 'iter_60.pth').write_bytes(good[:len(good) // 3])
    Path(t.cut, 'last_checkpoint').write_text(str(Path(t.cut, 'iter_60.pth')))
    # weights only (no meta / optimizer): fine for load_from, not --resume
    t.weights = str(root / 'weights.pth')
    torch.save(
        {'state_dict': torch.load(ctx.ckpt, weights_only=False)['state_dict']},
        t.weights)
    return t


def _tr(t, config=None, *extra, work=True):
    argv = [config or t.cfg]
    if work:
        argv += ['--work-dir', str(t.root / 'work')]
    return argv + list(extra)


TRAIN_CASES = [
    Case(
        'train-hook-eps-in-255-units', lambda t: _tr(t, t.eps_units),
        lambda t: 'error: AdvTrainingHook: eps=8 is not a valid l_inf '
        'radius: it must be in [0, 1] as a fraction of the pixel range, '
        'e.g. eps=8/255 (= 0.0314). On the command line radii are given in '
        'units of 1/255 (--eps 8).'),
    Case(
        'train-hook-steps-0', lambda t: _tr(t, t.steps_0),
        lambda t: 'error: AdvTrainingHook: steps must be an integer >= 1 '
        '(2 or 5 in the paper), got 0'),
    Case(
        'train-hook-unknown-loss', lambda t: _tr(t, t.loss),
        lambda t: "error: AdvTrainingHook: unknown loss 'cross_entropy'; "
        'valid names are: ce, bal_ce, cossim_ce, mask_ce, js, mask_sph, '
        'mask_ce_bal, cos'),
    Case(
        'train-hook-adv-ratio', lambda t: _tr(t, t.ratio),
        lambda t: 'error: AdvTrainingHook: adv_ratio must be in [0, 1] (the '
        'adversarial fraction of each batch), got 1.5'),
    Case(
        'train-hook-start-iter', lambda t: _tr(t, t.start),
        lambda t: 'error: AdvTrainingHook: start_iter must be an integer '
        '>= 0, got -1'),
    Case(
        'train-config-missing', lambda t: _tr(t, str(t.root / 'nope.py')),
        lambda t: f"error: config file '{t.root / 'nope.py'}' does not "
        'exist'),
    Case(
        'train-launcher-pytorch-without-torchrun',
        lambda t: _tr(t, None, '--launcher', 'pytorch'), lambda t:
        ('error: --launcher pytorch needs the environment its '
         'launcher sets, but RANK, WORLD_SIZE, MASTER_ADDR, '
         'MASTER_PORT are not set', )),
    Case(
        'train-work-dir-is-file',
        lambda t: _tr(t, None, '--work-dir', t.c.afile, work=False),
        lambda t: f'error: --work-dir {t.c.afile}: is a file, not a '
        'directory'),
    Case(
        'train-resume-missing',
        lambda t: _tr(t, None, '--resume', str(t.root / 'nope.pth')),
        lambda t: f"error: --resume checkpoint '{t.root / 'nope.pth'}' does "
        'not exist'),
    Case(
        'train-resume-empty',
        lambda t: _tr(t, None, '--resume', t.c.empty_ckpt),
        lambda t: f'error: --resume: checkpoint {t.c.empty_ckpt} is empty '
        '(0 bytes): an interrupted download or save? Download or save it '
        'again'),
    Case(
        'train-resume-latest-truncated',
        lambda t: _tr(t, None, '--resume', '--work-dir', t.cut, work=False),
        lambda t: (f'error: --resume (the latest checkpoint of the work '
                   f'dir): checkpoint {t.cut}/iter_60.pth is truncated or '
                   'corrupt (an incomplete zip archive of ', )),
    Case(
        'train-load-from-not-pytorch', lambda t: _tr(t, t.load_random),
        lambda t: (f'error: load_from: checkpoint {t.c.random_ckpt} is not '
                   'a PyTorch checkpoint', )),
    Case(
        'train-resume-unsafe',
        lambda t: _tr(t, None, '--resume', t.c.unsafe_ckpt), lambda t:
        (f'error: checkpoint {t.c.unsafe_ckpt} was not loaded',
         'argparse.Namespace', '--trust-checkpoint')),
    Case(
        'train-resume-weights-only',
        lambda t: _tr(t, None, '--resume', t.weights),
        lambda t: f'error: cannot resume from {t.weights}: it holds weights '
        'but no training state (meta, optimizer, iteration); to start a '
        'training from these weights use --cfg-options '
        f'load_from={t.weights} instead of --resume'),
    Case(
        'train-data-root-missing',
        lambda t: _tr(t, None, '--data-root', str(t.root / 'nope')),
        lambda t: 'error: a dataset (BaseSegDataset) could not be built: '
        f"[Errno 2] No such file or directory: '{t.root}/nope/img_dir/"
        "train'. Check its data_root, data_prefix and ann_file (--data-root "
        'sets every data_root)'),
    Case(
        'train-config-data-root-missing',
        lambda t: _tr(t, None, '--cfg-options',
                      f'train_dataloader.dataset.data_root={t.root}/nope'),
        lambda t: 'error: a dataset (BaseSegDataset) could not be built: '
        f"[Errno 2] No such file or directory: '{t.root}/nope/img_dir/"
        "train'. Check its data_root, data_prefix and ann_file (--data-root "
        'sets every data_root)'),
    Case(
        'train-amp-on-cpu', lambda t: _tr(t, t.amp),
        lambda t: 'error: the config trains with mixed precision '
        '(AmpOptimWrapper), which needs a GPU; on a CPU add --no-amp'),
    Case('train-crop-size-not-positive',
         lambda t: _tr(t, None, '--crop-size', '0', '32'),
         lambda t: 'error: --crop-size 0 32: both must be positive'),
]


@pytest.mark.parametrize('case', TRAIN_CASES, ids=lambda case: case.id)
def test_train_tool_refuses(case, tctx):
    if case.id == 'train-amp-on-cpu' and torch.cuda.is_available():
        pytest.skip('AMP trains on a GPU')
    check_message(run_tool('train', case.argv(tctx)), case.expected(tctx))


def test_train_bad_resume_keeps_the_work_dir(tctx):
    """A cut-off latest checkpoint stops --resume before the Runner writes
    anything: the work dir is as it was."""
    before = snapshot(Path(tctx.cut))
    run_tool('train',
             _tr(tctx, None, '--resume', '--work-dir', tctx.cut, work=False))
    assert snapshot(Path(tctx.cut)) == before
