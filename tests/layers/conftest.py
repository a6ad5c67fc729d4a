"""Fixtures shared by the layer tests."""

import pytest
from keras.src.testing import test_case


class _Harness(test_case.TestCase):
    def runTest(self):  # pragma: no cover - never run as a unittest
        pass


@pytest.fixture
def harness():
    """Keras' layer-test harness (``run_layer_test``), set up and torn down per test."""
    case = _Harness()
    case.setUp()
    yield case
    case.tearDown()
