"""The resumable epoch order (tfvqvae.data.epochs), in memory and over records."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import epoch_batches
from tfvqvae.data import epoch_order


def _lists(ds):
    return [b.numpy().tolist() for b in ds]


def _records(n):
    """A dataset of dict records whose fields all carry the record's index."""
    ids = np.arange(n)
    return tf.data.Dataset.from_tensor_slices(
        {"codes": np.tile(ids[:, None, None], (1, 2, 2)).astype(np.int32), "label": ids}
    )


def _record_ids(ds):
    out = []
    for batch in ds:
        codes, label = batch["codes"].numpy(), batch["label"].numpy()
        np.testing.assert_array_equal(codes[:, 0, 0], label)  # fields permuted together
        assert (codes == label[:, None, None]).all()
        out.append(label.tolist())
    return out


def test_pinned_order_of_a_small_case():
    # Recorded from ImageDataset.epochs_dataset before the order moved here:
    # changing these numbers changes the batches of every resumed run.
    batches = _lists(epoch_batches(10, 3, seed=7, first_epoch=0, epochs=2))
    assert batches == [[3, 4, 1], [9, 0, 2], [6, 5, 7], [9, 1, 0], [4, 2, 5], [3, 8, 6]]


@pytest.mark.parametrize("seed,n,batch", [(7, 10, 3), (0, 23, 5), (2**40, 8, 8)])
def test_index_batches_are_the_epoch_order_cut_into_batches(seed, n, batch):
    epochs = 3
    got = _lists(epoch_batches(n, batch, seed=seed, first_epoch=0, epochs=epochs))
    used = (n // batch) * batch
    expected = []
    for e in range(epochs):  # NumPy reference: reshape the permutation, drop the rest
        order = epoch_order(n, seed=seed, epoch=e).numpy()
        assert sorted(order.tolist()) == list(range(n))
        expected += order[:used].reshape(-1, batch).tolist()
    assert got == expected


@pytest.mark.parametrize("kind", ["memory", "records", "records in blocks"])
def test_resumed_stream_is_the_tail_of_the_full_stream(kind):
    n, batch, epochs, seed = 23, 5, 3, 11

    def stream(first, skip):
        if kind == "memory":
            return _lists(epoch_batches(n, batch, seed=seed, first_epoch=first, epochs=epochs,
                                        skip_batches=skip))
        block = 7 if kind == "records in blocks" else None
        return _record_ids(epoch_batches(_records(n), batch, seed=seed, first_epoch=first,
                                         epochs=epochs, skip_batches=skip, shuffle_block=block))

    full = stream(0, 0)
    per_epoch = n // batch
    assert len(full) == epochs * per_epoch and all(len(b) == batch for b in full)
    for first in range(epochs):
        for skip in range(per_epoch):
            assert stream(first, skip) == full[first * per_epoch + skip:], (first, skip)


def test_epochs_differ_and_seeds_decide():
    a = _lists(epoch_batches(40, 4, seed=3, first_epoch=0, epochs=3))
    epochs = [sum(a[10 * e:10 * e + 10], []) for e in range(3)]
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert all(sorted(e) == list(range(40)) for e in epochs)
    again = _lists(epoch_batches(40, 4, seed=3, first_epoch=0, epochs=3))
    assert again == a
    other = _lists(epoch_batches(40, 4, seed=4, first_epoch=0, epochs=3))
    assert other != a


def test_order_does_not_depend_on_global_seed_or_iteration():
    records = _records(30)
    ds = epoch_batches(records, 4, seed=5, first_epoch=1, epochs=3, shuffle_block=8)
    tf.random.set_seed(1)
    first = _record_ids(ds)
    tf.random.set_seed(12345)
    assert _record_ids(ds) == first  # iterated again, other global seed
    rebuilt = epoch_batches(records, 4, seed=5, first_epoch=1, epochs=3, shuffle_block=8)
    assert _record_ids(rebuilt) == first


def test_records_of_one_block_follow_the_in_memory_order():
    n = 17
    memory = _lists(epoch_batches(n, 4, seed=9, first_epoch=0, epochs=2))
    records = _record_ids(epoch_batches(_records(n), 4, seed=9, first_epoch=0, epochs=2))
    assert records == memory


def test_records_are_permuted_within_consecutive_blocks():
    n, block = 20, 6  # blocks [0..5], [6..11], [12..17], [18, 19]
    stream = _record_ids(epoch_batches(_records(n), 1, seed=2, first_epoch=0, epochs=1,
                                       shuffle_block=block))
    ids = [b[0] for b in stream]
    for start in range(0, n, block):
        assert sorted(ids[start:start + block]) == list(range(start, min(start + block, n)))
    assert ids != list(range(n))
    # Different blocks get different permutations (not one pattern repeated).
    offsets = [[i - start for i in ids[start:start + block]] for start in (0, 6, 12)]
    assert len({tuple(o) for o in offsets}) == 3


def test_drop_remainder_false_keeps_every_example_once_per_epoch():
    n, batch = 10, 4
    batches = _lists(epoch_batches(n, batch, seed=1, first_epoch=0, epochs=2,
                                   drop_remainder=False))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(batches[:3], [])) == list(range(n))
    assert sum(batches[:3], []) == epoch_order(n, seed=1, epoch=0).numpy().tolist()
    records = _record_ids(epoch_batches(_records(n), batch, seed=1, first_epoch=0, epochs=2,
                                        drop_remainder=False))
    assert records == batches


def test_no_epochs_left_is_an_empty_stream():
    assert _lists(epoch_batches(10, 2, seed=0, first_epoch=3, epochs=3)) == []
    assert _lists(epoch_batches(10, 2, seed=0, first_epoch=4, epochs=3)) == []


def test_numpy_integers_are_accepted():
    got = _lists(epoch_batches(np.int64(10), np.int32(3), seed=np.int64(7),
                               first_epoch=np.int64(0), epochs=np.int64(1)))
    assert got == [[3, 4, 1], [9, 0, 2], [6, 5, 7]]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(batch_size=0), ValueError, "Received: batch_size=0"),
        (dict(seed="1"), ValueError, "Received: seed='1'"),
        (dict(seed=1.0), ValueError, "Received: seed=1.0"),
        (dict(first_epoch=-1), ValueError, "Received: first_epoch=-1"),
        (dict(skip_batches=-1), ValueError, "Received: skip_batches=-1"),
        (dict(skip_batches=3), ValueError, r"skip_batches < 3 .*Received: skip_batches=3"),
        (dict(batch_size=11), ValueError, "Received: data=10"),
        (dict(data=0), ValueError, "Received: data=0"),
        (dict(data=True), TypeError, "Received: data of type bool"),
        (dict(data=[1, 2]), TypeError, "Received: data of type list"),
        (dict(shuffle_block=5), ValueError, "Received: shuffle_block=5"),
    ],
)
def test_argument_errors(kwargs, error, match):
    arguments = dict(data=10, batch_size=3, seed=0, first_epoch=0, epochs=1)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        epoch_batches(arguments.pop("data"), arguments.pop("batch_size"), **arguments)


def test_record_argument_errors():
    with pytest.raises(ValueError, match="Received: shuffle_block=0"):
        epoch_batches(_records(4), 2, seed=0, first_epoch=0, epochs=1, shuffle_block=0)
    with pytest.raises(ValueError, match="Received: epoch=-1"):
        epoch_order(4, seed=0, epoch=-1)
    with pytest.raises(ValueError, match="Received: num_examples=0"):
        epoch_order(0, seed=0, epoch=0)
