"""The code-file modules split by concept keep every import path, and the data
loaders' argument errors follow the library's one style."""

import re

import numpy as np
import pytest
import tensorflow as tf

import tfvqvae.data
from tfvqvae.data import code_format
from tfvqvae.data import codes


def test_public_names_are_one_object_whichever_module_they_come_from():
    for name in ("model_fingerprint", "expected_metadata", "CODES_FORMAT", "CODES_VERSION"):
        assert getattr(codes, name) is getattr(code_format, name), name
    for name in ("write_codes", "load_codes", "read_code_metadata", "model_fingerprint",
                 "expected_metadata", "code_files", "default_num_shards"):
        assert getattr(tfvqvae.data, name) is getattr(codes, name), name
    assert set(codes.__all__) >= set(code_format.__all__)


def test_record_round_trip_through_the_format_module():
    metadata = {"levels": ("top", "bottom"), "code_shapes": {"top": (1, 2), "bottom": (2, 2)}}
    example = code_format._record_example({"top": [3, 1], "bottom": [0, 1, 2, 3]}, 7)
    parsed = code_format._parser(metadata)(tf.constant([example.SerializeToString()]))
    np.testing.assert_array_equal(parsed["top"].numpy(), [[[3, 1]]])
    np.testing.assert_array_equal(parsed["bottom"].numpy(), [[[0, 1], [2, 3]]])
    np.testing.assert_array_equal(parsed["label"].numpy(), [7])
    assert parsed["top"].dtype == tf.int32


SHARD_HEADER = {
    "format": "tfvqvae-codes", "version": 1, "levels": ["top"], "num_embeddings": {"top": 4},
    "code_shapes": {"top": [2, 3]}, "num_classes": None, "num_records": 5,
    "model_fingerprint": "abc", "source": {},
    "shard_index": 1, "num_shards": 3, "total_records": 15,
}


def test_shard_header_fields_are_checked():
    code_format._check_header("x", SHARD_HEADER)  # valid
    single = {k: v for k, v in SHARD_HEADER.items()
              if k not in ("shard_index", "num_shards", "total_records")}
    code_format._check_header("x", single)  # the single-file header of earlier releases
    for change, match in [
        ({"shard_index": 3}, "shard_index 3 of num_shards 3 is not a shard number"),
        ({"shard_index": -1}, "shard_index -1"),
        ({"num_shards": 0}, "of num_shards 0"),
        ({"num_shards": "3"}, "of num_shards '3'"),
        ({"total_records": 4}, "total_records 4 is less than this shard's num_records 5"),
    ]:
        with pytest.raises(ValueError, match="x is not a valid tfvqvae code file: .*"
                                             + re.escape(match)):
            code_format._check_header("x", {**SHARD_HEADER, **change})
    partial = {k: v for k, v in SHARD_HEADER.items() if k != "total_records"}
    with pytest.raises(ValueError, match="a shard header needs all of"):
        code_format._check_header("x", partial)


@pytest.mark.parametrize("bad", ["valid", 0, None])
def test_digits_split_message(bad):
    from tfvqvae.data import load_digits

    with pytest.raises(
        ValueError,
        match=re.escape(f"`split` must be one of ('train', 'test'). Received: split={bad!r}"),
    ):
        load_digits(bad)


def test_local_files_split_message(tmp_path):
    from tfvqvae.data import load_idx_folder

    with pytest.raises(
        ValueError,
        match=re.escape("`split` must be one of ('train', 'test'). Received: split='validation'"),
    ):
        load_idx_folder(tmp_path, "validation")


def test_crop_message():
    from tfvqvae.data.transform import check_options

    with pytest.raises(
        ValueError,
        match=re.escape("`crop` must be one of ('none', 'center'). Received: crop='left'"),
    ):
        check_options(image_size=8, crop="left")
