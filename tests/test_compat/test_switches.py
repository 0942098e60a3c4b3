"""Every compat patch can be switched off and undone, and says once what
it did (fresh processes: the patches are process-wide)."""
import os
import subprocess
import sys
import textwrap

import pytest

from mmseg_robust.compat import PATCHES, disabled_patches


def _run(code: str, **env) -> str:
    res = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **env))
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


STATE = """
    import importlib.util, sys, warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        import mmseg_robust
        import mmengine.runner.checkpoint as ck
        import mmengine.utils as mu
        try:
            # with mmcv-lite and the mmcv_ops patch off, registering the
            # plugin's modules (explicitly) fails like `import mmseg.models`
            # does without the plugin
            mmseg_robust.register_all_modules()
            import mmseg
            import mmseg.models
            models = 'ok'
        except ModuleNotFoundError as e:
            models = e.name
    from mmseg_robust.compat import (CompatWarning, compat_status,
                                     uninstall_compat)
    announced = sorted(str(x.message).split("'")[1] for x in w
                       if issubclass(x.category, CompatWarning))
    print('announced', announced)
    print('status', {k: v.split(':')[0] for k, v in compat_status().items()})
    print('models', models)
    print('own_loader', ck.CheckpointLoader._schemes[''] is ck.load_from_local)
    print('own_paths', mu.get_installed_path.__module__)
"""


def _parse(out: str) -> dict:
    return {
        line.split(' ', 1)[0]: line.split(' ', 1)[1]
        for line in out.strip().splitlines()
    }


def test_on_by_default_each_announced_once():
    state = _parse(
        _run(STATE + """
    import mmseg_robust.compat as c
    c.apply_compat()  # again: nothing new
    print('again', len([x for x in w if 'compat patch' in str(x.message)]))
    """))
    applied = [n for n, v in eval(state['status']).items() if v == 'applied']
    assert sorted(eval(state['announced'])) == sorted(applied)
    assert state['models'] == 'ok'


def test_all_off():
    state = _parse(_run(STATE, MMSEG_ROBUST_NO_COMPAT='1'))
    assert set(eval(state['status']).values()) == {'disabled'}
    assert eval(state['announced']) == []
    assert state['own_loader'] == 'True'
    assert state['own_paths'] == 'mmengine.utils.package_utils'
    from mmseg_robust.compat.mmcv_ops import fallback_installed
    if fallback_installed():  # this environment has mmcv-lite
        assert state['models'] == 'mmcv._ext'


def test_one_off():
    state = _parse(_run(STATE, MMSEG_ROBUST_NO_COMPAT='checkpoint'))
    status = eval(state['status'])
    assert status['checkpoint'] == 'disabled'
    assert state['own_loader'] == 'True'
    assert state['models'] == 'ok'
    assert 'checkpoint' not in eval(state['announced'])


def test_unknown_name_warns(monkeypatch):
    monkeypatch.setenv('MMSEG_ROBUST_NO_COMPAT', 'checkpoint,mmcv-ops')
    with pytest.warns(UserWarning, match="unknown patch name.*mmcv-ops"):
        assert disabled_patches() == ['checkpoint']
    monkeypatch.setenv('MMSEG_ROBUST_NO_COMPAT', 'all')
    assert disabled_patches() == list(PATCHES)


def test_uninstall_restores_the_libraries():
    state = _parse(
        _run(STATE + """
    uninstall_compat()
    print('after_loader',
          ck.CheckpointLoader._schemes[''] is ck.load_from_local)
    print('after_paths', mu.get_installed_path.__module__)
    import mmengine.config.config as cc
    print('after_config', cc.get_installed_path.__module__)
    from mmseg_robust.compat.mmcv_ops import fallback_installed
    print('after_fallback', fallback_installed())
    print('after_status', sorted(set(compat_status().values())))
    try:
        import mmcv.ops
        print('after_ops ok')
    except ModuleNotFoundError as e:
        print('after_ops', e.name)
    """))
    assert state['after_loader'] == 'True'
    assert state['after_paths'] == 'mmengine.utils.package_utils'
    assert state['after_config'] == 'mmengine.utils.package_utils'
    assert state['after_fallback'] == 'False'
    assert eval(state['after_status']) == ['not installed']
    if 'mmcv_ops' in eval(state['announced']):
        assert state['after_ops'] == 'mmcv._ext'  # mmcv-lite as it is
