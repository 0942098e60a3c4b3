"""Install mmseg_robust (``pip install -e .``)."""
import os.path as osp
import re
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def readme() -> str:
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def version() -> str:
    with open(osp.join(HERE, 'mmseg_robust', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(name: str) -> list:
    """Requirement lines of ``requirements/<name>.txt`` (no comments)."""
    reqs = []
    with open(osp.join(HERE, 'requirements', name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


setup(
    name='mmseg_robust',
    version=version(),
    description='Adversarial robustness evaluation (SEA) and adversarial '
    'training for MMSegmentation',
    long_description=readme(),
    long_description_content_type='text/markdown',
    keywords='semantic segmentation, adversarial robustness, mmsegmentation',
    packages=find_packages(
        exclude=('configs', 'tools', 'tests', 'benchmarks', 'docs')),
    include_package_data=True,
    python_requires='>=3.8',
    license='Apache License 2.0',
    install_requires=parse_requirements('runtime.txt'),
    # the demo's data (requirements/demo.txt) is no extra: it must be
    # installed with --no-deps, which an extra cannot say
    extras_require={
        'tests': parse_requirements('tests.txt'),
        'lint': parse_requirements('lint.txt'),
        'optional': parse_requirements('optional.txt'),
        'mim': parse_requirements('mminstall.txt'),
        'cpu': parse_requirements('cpu.txt'),
    },
    zip_safe=False)
