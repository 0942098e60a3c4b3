"""The old homes of moved names and modules (issue #22, one home per role)
still give the same objects for one release, with a DeprecationWarning; the
new homes do not warn; the attacks (also their deprecated
``worst_case_miou``), the converters and the metric stay free of OpenMMLab
(a fresh process, as test_import.test_attacks_need_only_torch)."""
import importlib
import sys
import warnings

import pytest

from .test_import import HEAVY, _finish, _start

ADAPTER = 'mmseg_robust.adapter'
CONVERTERS = 'mmseg_robust.converters'
METRICS = 'mmseg_robust.metrics_core'
EVALUATION = 'mmseg_robust.evaluation'
TRAINING = 'mmseg_robust.training'

# (old module under mmseg_robust., name, new module)
MOVED_NAMES = [
    ('attacks', 'worst_case_miou', METRICS),
    ('models', 'SegmentorAttackModel', ADAPTER),
    ('models', 'AttackBatch', ADAPTER),
    ('models', 'unwrap_segmentor', ADAPTER),
    ('models', 'final_decode_head', ADAPTER),
    ('models', 'accelerate_segmentor', ADAPTER),
    ('models', 'convert_pir_at', CONVERTERS),
    ('models', 'PIRATConversion', CONVERTERS),
    ('models', 'convert_robust_convnext', CONVERTERS),
    ('models.initializers', 'convert_robust_convnext', CONVERTERS),
    ('models.initializers', 'ConvNeXtConversion', CONVERTERS),
    ('models.initializers.robust_pretrained', 'ConvNeXtConversion',
     CONVERTERS),
    ('engine', 'SEATestLoop', EVALUATION),
    ('engine', 'DEFAULT_EPS', EVALUATION),
    ('engine', 'AdvTrainingHook', TRAINING),
]

LOOP_MODULES = ('sea_test_loop', 'sea_batch', 'sea_book', 'sea_checks',
                'sea_options', 'sea_report', 'sea_trust')

# old module -> new module (the old one is a shim that re-exports it)
MOVED_MODULES = {
    'mmseg_robust.attacks.worst_miou': METRICS,
    'mmseg_robust.models.pir_at': f'{CONVERTERS}.pir_at',
    'mmseg_robust.models.state_dicts': f'{CONVERTERS}.state_dicts',
    'mmseg_robust.models.attack_adapter': f'{ADAPTER}.attack_model',
    'mmseg_robust.models.surrogate': f'{ADAPTER}.surrogate',
    'mmseg_robust.engine.runner': f'{EVALUATION}.loops',
    **{
        f'mmseg_robust.engine.runner.{name}': f'{EVALUATION}.loops.{name}'
        for name in LOOP_MODULES
    },
    'mmseg_robust.engine.hooks': f'{TRAINING}.hooks',
    'mmseg_robust.engine.hooks.adv_training_hook':
    f'{TRAINING}.hooks.adv_training_hook',
    'mmseg_robust.engine.schedules': f'{TRAINING}.schedules',
}


@pytest.mark.parametrize('old,name,new', MOVED_NAMES)
def test_moved_name_is_the_same_object_and_warns(old, name, new):
    module = importlib.import_module(f'mmseg_robust.{old}')
    with pytest.warns(DeprecationWarning, match=f'{new}.{name}'):
        got = getattr(module, name)
    assert got is getattr(importlib.import_module(new), name)
    assert name not in getattr(module, '__all__', ())


@pytest.mark.parametrize('old', sorted(MOVED_MODULES))
def test_moved_module_reexports_and_warns(old, monkeypatch):
    new = importlib.import_module(MOVED_MODULES[old])
    # a fresh import of the shim (another test may have imported it)
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=MOVED_MODULES[old]):
        shim = importlib.import_module(old)
    assert shim.__all__ == new.__all__
    for name in new.__all__:
        assert getattr(shim, name) is getattr(new, name), name


@pytest.mark.parametrize('new',
                         [ADAPTER, CONVERTERS, METRICS, EVALUATION, TRAINING])
def test_new_homes_do_not_warn(new):
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        module = importlib.import_module(new)
        for name in module.__all__:
            getattr(module, name)


def test_cli_package_keeps_its_exports():
    import mmseg_robust.cli as cli
    for name in cli.__all__:
        assert getattr(cli, name) is not None, name
    # the 22 of before the split, and run_tool (added since)
    assert len(cli.__all__) == 23 and 'run_tool' in cli.__all__
    # public before the split, not in __all__
    assert callable(cli.config_from_args) and 'pytorch' in cli.LAUNCHER_ENV


def test_unknown_names_still_raise_attribute_error():
    import mmseg_robust.attacks
    import mmseg_robust.engine
    import mmseg_robust.models
    for module in (mmseg_robust.attacks, mmseg_robust.models,
                   mmseg_robust.engine):
        with pytest.raises(AttributeError, match='no_such_name'):
            module.no_such_name


def test_light_homes_import_no_openmmlab():
    out = _finish(
        _start(f"""
        import sys
        import warnings
        import mmseg_robust.attacks
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            mmseg_robust.attacks.worst_case_miou
        import mmseg_robust.converters
        import mmseg_robust.metrics_core
        print(sorted(m for m in sys.modules
                     if m.split('.')[0] in {HEAVY!r}))
        """))
    assert out.strip() == '[]', f'heavy modules imported: {out}'


def test_old_submodule_served_as_attribute_warns_at_the_caller(monkeypatch):
    """``from mmseg_robust.engine import runner``: the warning points at the
    line that asked, not at importlib (whose frames are hidden)."""
    import mmseg_robust.engine as engine
    monkeypatch.delitem(
        sys.modules, 'mmseg_robust.engine.runner', raising=False)
    monkeypatch.delattr(engine, 'runner', raising=False)
    with pytest.warns(DeprecationWarning, match='evaluation.loops') as record:
        module = engine.runner
    assert module.SEATestLoop is importlib.import_module(
        f'{EVALUATION}.loops').SEATestLoop
    assert {w.filename for w in record} == {__file__}


def test_importing_the_old_engine_package_registers_and_warns():
    out = _finish(
        _start("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import mmseg_robust.engine
        from mmseg.registry import HOOKS, LOOPS
        print(LOOPS.get('SEATestLoop') is not None,
              HOOKS.get('AdvTrainingHook') is not None,
              any('mmseg_robust.training' in str(w.message)
                  and w.category is DeprecationWarning for w in caught))
        """))
    assert out.strip().splitlines()[-1] == 'True True True'
