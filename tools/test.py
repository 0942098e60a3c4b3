"""Test (and evaluate) a segmentor; ``--eval sea`` evaluates robustness.

Same command line as MMSegmentation's ``tools/test.py``, plus::

    python tools/test.py CONFIG CHECKPOINT --eval sea [--eps 4 8 12 16]
        [--sea-version recommended|thorough|T1|2023|2024] [--n-iter 300]
        [--attacks ...]
        [--class-weights train|image|W1 W2 ...] [--seed 0]
        [--amp [fp16|bf16]] [--result-precision fp32|amp]
        [--channels-last] [--compile]
        [--resume] [--max-images N] [--no-skip] [--per-class]
        [--table compact|per_radius|wide] [--allow-tiny-eps]
        [--checks none|fast|full] [--surrogate CONFIG CKPT]
        [--norm linf|l2] [--eot N]

and, for any test, ``--trust-checkpoint PATH``, ``--test-scale LONG SHORT``
and ``--debug``.

``--eps`` is in units of 1/255. Per-image results, ``summary.json`` and
``robustness_curve.png`` go to ``<work_dir>/sea`` (or ``--out``).

Bad input ends with one ``error: ...`` line and exit status 1, before any
work where it can be checked up front (docs/errors.md lists them);
``--debug`` shows the traceback of such errors too.
"""
import argparse
from typing import Optional, Sequence

from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import mmseg_robust
from mmseg_robust.adapter.surrogate import load_surrogate
from mmseg_robust.cli import (ToolError, add_runner_arguments,
                              checkpoint_mismatch, config_from_args,
                              debug_requested, parse_runner_args,
                              read_checkpoint, run_tool, set_test_scale,
                              setup_cpu_distributed, user_errors)
from mmseg_robust.cli.sea import (add_sea_arguments, check_output_dirs,
                                  check_test_config, configure_sea)
from mmseg_robust.compat.checkpoint import trust_checkpoints

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model; --eval sea for SEA '
        'robustness evaluation')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the dir for logs and (with --eval sea) robustness results')
    parser.add_argument(
        '--out',
        type=str,
        help='stock: directory for predictions (offline evaluation); '
        'with --eval sea: directory for the SEA results')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images are saved (with --eval sea: '
        'clean and worst-case adversarial predictions)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='Test time augmentation')
    add_sea_arguments(parser)
    add_runner_arguments(parser, 'the checkpoint to test')
    return parse_runner_args(parser, argv)


def trigger_visualization_hook(cfg, args):
    """Stock MMSeg behaviour of --show / --show-dir."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise ToolError('VisualizationHook must be in default_hooks for '
                        '--show/--show-dir: add visualization=dict('
                        "type='SegVisualizationHook')")
    hook = default_hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the tool; returns the metrics."""
    args = parse_args(argv)
    with user_errors(debug_requested(args.debug)):
        return run(args)


def run(args: argparse.Namespace) -> dict:
    """Everything after parsing; the package's user errors (ConfigError,
    a refused checkpoint) become one ``error:`` line in :func:`main`."""
    cfg = config_from_args(args)
    use_sea = args.eval == 'sea' or \
        (cfg.get('test_cfg') or {}).get('type') == 'SEATestLoop'
    if use_sea:
        configure_sea(cfg, args)  # checks the SEA options first
    check_test_config(cfg, args, use_sea)
    if args.test_scale:
        keys = set_test_scale(cfg, args.test_scale)
        if not keys:
            long, short = args.test_scale
            raise ToolError(f'--test-scale {long} {short}: the test pipeline '
                            'has no Resize with a scale to change')
        print_log(
            f'--test-scale {args.test_scale}: set {", ".join(keys)}',
            logger='current')
    for path in args.trust_checkpoint:
        trust_checkpoints(path)
    # a missing, empty, truncated, corrupt or refused file stops here,
    # before anything (results of an earlier run included) is touched
    ckpt = read_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    if use_sea and args.surrogate:
        # the surrogate's files and fit, before any work (the loop loads it
        # again on the model's device)
        load_surrogate(*args.surrogate)
    check_output_dirs(cfg, args, use_sea)
    setup_cpu_distributed(cfg, args.launcher)

    if not use_sea:
        if args.show or args.show_dir:
            cfg = trigger_visualization_hook(cfg, args)
        if args.tta:
            cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
            cfg.tta_model.module = cfg.model
            cfg.model = cfg.tta_model
        if args.out is not None:
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True

    # as MMSeg's tools/test.py: a config may name its own runner
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    problem = checkpoint_mismatch(runner.model, ckpt, name=args.checkpoint)
    del ckpt
    if problem:
        raise ToolError(problem)
    return runner.test()


if __name__ == '__main__':
    # a distributed run ends without the interpreter's shutdown
    # (cli.launch.run_tool says why)
    run_tool(main)
