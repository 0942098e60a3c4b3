"""The catalogue of errors in ``docs/errors.md`` and the bad-input cases of
``test_test_tool_errors.py`` (``tools/test.py``) and
``test_train_tool_errors.py`` (``tools/train.py``) stay in step: one row per
case id, no stale rows."""
import re

from .bad_input import REPO
from .test_test_tool_errors import TEST_CASES
from .test_train_tool_errors import TRAIN_CASES

#: Catalogue rows checked by the other tests of test_test_tool_errors.py and
#: of tests/test_evaluation/test_sea_test_loop.py.
EXTRA_DOCUMENTED = ('checkpoint-does-not-fit', 'resume-other-settings',
                    'resume-other-checkpoint')


def test_catalogue_lists_every_case():
    """docs/errors.md has a row for every case, and no stale ones."""
    text = (REPO / 'docs' / 'errors.md').read_text()
    documented = set(re.findall(r'^\| `([a-z0-9-]+)` \|', text, re.M))
    cases = {c.id for c in TEST_CASES + TRAIN_CASES} | set(EXTRA_DOCUMENTED)
    assert documented == cases
    assert len(cases) >= 25
