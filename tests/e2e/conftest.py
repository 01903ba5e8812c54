"""Everything under tests/e2e is an end-to-end test: marked slow (deselect with -m 'not slow')."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in item.path.as_posix():
            item.add_marker(pytest.mark.slow)
