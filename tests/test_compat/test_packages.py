"""``mmseg::`` config paths without pkg_resources (setuptools >= 81)."""
import os.path as osp
import subprocess
import sys
import textwrap

import mmseg

from mmseg_robust.compat import packages


def test_helpers_find_mmseg_by_module_and_distribution_name():
    root = osp.dirname(mmseg.__file__)
    assert packages.get_installed_path('mmseg') == root
    assert packages.get_installed_path('mmsegmentation') == root
    assert packages.package2module('mmsegmentation') == 'mmseg'
    assert packages.is_installed('mmsegmentation')
    assert packages.is_installed('mmseg')
    assert not packages.is_installed('surely_not_a_package_xyz')


def test_mmseg_scope_resolves_when_pkg_resources_is_missing(tmp_path):
    """A fresh process where ``import pkg_resources`` fails."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("_base_ = 'mmseg::_base_/default_runtime.py'\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules['pkg_resources'] = None  # import fails
        import mmseg_robust
        mmseg_robust.register_all_modules()
        from mmengine.config import Config
        print(Config.fromfile({str(cfg)!r}).default_scope)
        """)
    res = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith('mmseg')
