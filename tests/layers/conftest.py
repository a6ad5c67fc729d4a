"""Fixtures shared by the layer tests."""

import pytest
from keras.src.testing import test_case


class _Harness(test_case.TestCase):
    def runTest(self):  # pragma: no cover - never run as a unittest
        pass

    def run_quantizer_test(self, cls, init_kwargs, dim, trainable, non_trainable, num_losses=1):
        """``run_layer_test`` for a quantizer: (2, 3, 3, dim) float32 in and out, no
        seed generators or masking, mixed precision, training when it adds losses."""
        self.run_layer_test(
            cls,
            init_kwargs=init_kwargs,
            input_shape=(2, 3, 3, dim),
            expected_output_shape=(2, 3, 3, dim),
            expected_output_dtype="float32",
            expected_num_trainable_weights=trainable,
            expected_num_non_trainable_weights=non_trainable,
            expected_num_seed_generators=0,
            expected_num_losses=num_losses,
            supports_masking=False,
            run_training_check=num_losses > 0,
            run_mixed_precision_check=True,
        )


@pytest.fixture
def harness():
    """Keras' layer-test harness (``run_layer_test``), set up and torn down per test."""
    case = _Harness()
    case.setUp()
    yield case
    case.tearDown()
