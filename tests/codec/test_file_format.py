"""The codec's 8-byte header and checksum, against hand-computed bytes and hashlib."""

import hashlib

import numpy as np
import pytest

from tfvqvae.codec.file_format import HEADER_BYTES
from tfvqvae.codec.file_format import CodecError
from tfvqvae.codec.file_format import Header
from tfvqvae.codec.file_format import checksum
from tfvqvae.codec.file_format import pack_header
from tfvqvae.codec.file_format import parse_header


def test_header_bytes_by_hand():
    header = Header(levels=2, labelled=True, height=28, width=28, fingerprint=0xAB,
                    checksum=0x1234)
    # magic C5; version 1, levels − 1 = 1, labelled: 0b0001_001_1 = 0x13;
    # (27 << 12) | 27 = 0x01B01B; fingerprint AB; checksum 12 34.
    assert pack_header(header) == bytes.fromhex("C5 13 01 B0 1B AB 12 34")
    assert len(pack_header(header)) == HEADER_BYTES == 8


@pytest.mark.parametrize("levels,labelled,height,width", [
    (1, False, 1, 1), (8, True, 4096, 4096), (3, False, 256, 17), (2, True, 4095, 1)])
def test_header_round_trip(levels, labelled, height, width):
    header = Header(levels, labelled, height, width, fingerprint=200, checksum=65535)
    assert parse_header(pack_header(header) + b"payload") == header


@pytest.mark.parametrize("field,value", [
    ("levels", 0), ("levels", 9), ("height", 0), ("width", 4097), ("fingerprint", 256),
    ("checksum", -1)])
def test_fields_that_do_not_fit_are_refused(field, value):
    fields = dict(levels=1, labelled=False, height=8, width=8, fingerprint=0, checksum=0)
    fields[field] = value
    with pytest.raises(ValueError, match=str(value)):
        pack_header(Header(**fields))


def test_short_foreign_and_future_files_are_refused():
    good = pack_header(Header(2, True, 28, 28, 7, 9))
    with pytest.raises(CodecError, match="truncated.*Received: 5 bytes"):
        parse_header(good[:5])
    with pytest.raises(CodecError, match="first byte is 0x89"):
        parse_header(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    with pytest.raises(CodecError, match="version 2"):
        parse_header(good[:1] + bytes([good[1] & 0x0F | 0x20]) + good[2:])


def test_checksum_is_blake2b_of_header_label_maps_and_length():
    header = Header(2, True, 28, 28, 7, checksum=0xFFFF)  # the checksum field is not hashed
    top = np.arange(16).reshape(4, 4)
    bottom = np.arange(64).reshape(8, 8) % 5
    reference = hashlib.blake2b(
        bytes.fromhex("C5 13 01 B0 1B 07") + (3).to_bytes(4, "little")
        + top.astype("<i4").tobytes() + bottom.astype("<i4").tobytes()
        + (21).to_bytes(4, "little"), digest_size=2)
    assert checksum(header, 3, [top, bottom], 21) == int.from_bytes(reference.digest(), "big")
    # Any change to the label, a code, the header or the length changes it (here).
    base = checksum(header, 3, [top, bottom], 21)
    assert checksum(header, 4, [top, bottom], 21) != base
    changed = bottom.copy()
    changed[7, 7] += 1
    assert checksum(header, 3, [top, changed], 21) != base
    assert checksum(Header(2, True, 28, 27, 7), 3, [top, bottom], 21) != base
    assert checksum(header, 3, [top, bottom], 22) != base
