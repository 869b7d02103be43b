"""The examples in slowlearn's docstrings (`>>>` lines) run and print what they show."""
import doctest
import importlib
import pkgutil

import pytest

import slowlearn

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(slowlearn.__path__, "slowlearn.")
                 if name != "slowlearn.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_there_are_examples_to_run():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name)))
    assert examples >= 5
