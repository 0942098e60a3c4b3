"""Train a segmentor with MMSeg, mmseg_robust's modules registered.

Same command line as MMSegmentation's ``tools/train.py``, plus one place
each for what a recipe usually needs changed off its GPU cluster::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]
        [--amp | --no-amp] [--crop-size H W] [--test-scale LONG SHORT]
        [--data-root DIR] [--trust-checkpoint PATH] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}] [--debug]

Bad input ends with one ``error: ...`` line and exit status 1, before any
work where it can be checked up front (docs/errors.md lists them);
``--debug`` shows the traceback of such errors too.
"""
import argparse
from typing import Optional, Sequence

from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_robust
from mmseg_robust.cli import (add_runner_arguments, check_launcher_env,
                              check_output_dir, config_from_args,
                              debug_requested, parse_runner_args, run_tool,
                              setup_cpu_distributed, user_errors)
from mmseg_robust.cli.training import apply_train_options, train
from mmseg_robust.compat.checkpoint import trust_checkpoints

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a segmentor (clean or adversarial) with MMSeg')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume training: from CKPT if given, else from the latest '
        'checkpoint in the work dir')
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument(
        '--amp',
        action='store_true',
        default=None,
        help='enable automatic-mixed-precision training')
    amp.add_argument(
        '--no-amp',
        dest='amp',
        action='store_false',
        help='disable it (AmpOptimWrapper -> OptimWrapper, its AMP-only '
        'arguments dropped); needed on a CPU for configs that use AMP')
    parser.add_argument(
        '--crop-size',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help='training crop: every RandomCrop/Pad, the data preprocessor '
        'and the slide-inference window')
    parser.add_argument(
        '--data-root',
        help='dataset folder for every train/val/test dataset of the config')
    add_runner_arguments(parser,
                         'load_from, --resume or an init_cfg of the config')
    return parse_runner_args(parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the tool."""
    args = parse_args(argv)
    with user_errors(debug_requested(args.debug)):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Everything after parsing; the package's user errors (ConfigError,
    a refused checkpoint) become one ``error:`` line in :func:`main`."""
    cfg = config_from_args(args)
    check_launcher_env(args.launcher)

    for path in args.trust_checkpoint:
        trust_checkpoints(path)

    ckpt = apply_train_options(cfg, args)
    # last check: creates the work dir (as the Runner would)
    check_output_dir(cfg.work_dir,
                     '--work-dir' if args.work_dir else 'work_dir')
    setup_cpu_distributed(cfg, args.launcher)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    # runner.train(), a late user error (missing data, a checkpoint that
    # does not load) as one error line
    train(runner, ckpt, bool(cfg.get('resume')))


if __name__ == '__main__':
    # a distributed run ends without the interpreter's shutdown
    # (cli.launch.run_tool says why)
    run_tool(main)
