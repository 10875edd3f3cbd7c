import pytest
import doctest

from tests.conftest import ROOT


@pytest.mark.slow  # loads the bundled embedding model
def test_readme_examples_run():
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
