"""The compressed file: an 8-byte header, then the range coder's bytes.

Layout (version 1), big-endian::

    byte  0      magic 0xC5
    byte  1      bits 7-4: format version (1)
                 bits 3-1: coded levels − 1 (1 to 8 levels, top first)
                 bit  0:   1 when a class label is coded (class-conditional priors)
    bytes 2-4    image height − 1 (12 bits), then width − 1 (12 bits): 1 to 4096 px
    byte  5      model fingerprint: 8 bits of `fingerprint` of the VQ-VAE and priors
    bytes 6-7    checksum: 16 bits of BLAKE2b over bytes 0-5, the label, the
                 code maps and the payload's length (`checksum`)
    bytes 8-     payload: the range coder's 32-bit words, big-endian, cut to
                 the bytes the decoder needs (it pads with zeros)

The payload codes, in order: the label (uniform over the classes:
log2(num_classes) bits), then each coded level's map in raster order under
its prior. Nothing in a file says how to decode it except the model: a file
decodes only with the model and priors whose fingerprint it carries, and a
decode whose code maps (or length) do not reproduce the checksum (a
truncated, extended or altered file, a file from another model that shares
the fingerprint byte, or a runtime whose floats differ from the encoder's)
raises `CodecError` instead of returning an image.
"""

import dataclasses
import hashlib

import numpy as np

__all__ = [
    "CodecError",
    "HEADER_BYTES",
    "Header",
    "MAGIC",
    "MAX_LEVELS",
    "MAX_SIDE",
    "VERSION",
    "checksum",
    "fingerprint",
    "pack_header",
    "parse_header",
]

MAGIC = 0xC5
VERSION = 1
HEADER_BYTES = 8
MAX_LEVELS = 8
MAX_SIDE = 4096


class CodecError(ValueError):
    """A file that cannot be decoded: truncated, corrupted, foreign, or from a newer format."""


@dataclasses.dataclass(frozen=True)
class Header:
    """What the first 8 bytes of a file say.

    Attributes:
        levels: number of coded levels, top first (1 to `MAX_LEVELS`).
        labelled: whether a class label is coded.
        height, width: the image's size in pixels (1 to `MAX_SIDE`).
        fingerprint: the model's fingerprint byte.
        checksum: the 16-bit checksum of the header, label and code maps.
    """

    levels: int
    labelled: bool
    height: int
    width: int
    fingerprint: int
    checksum: int = 0

    def prefix(self):
        """Bytes 0-5 (everything but the checksum)."""
        flags = (VERSION << 4) | ((self.levels - 1) << 1) | int(self.labelled)
        size = ((self.height - 1) << 12) | (self.width - 1)
        return bytes([MAGIC, flags]) + size.to_bytes(3, "big") + bytes([self.fingerprint])


def pack_header(header):
    """The 8 header bytes of ``header``.

    Raises:
        ValueError: levels outside 1..8, a side outside 1..4096, a fingerprint
            or checksum that does not fit its field.
    """
    if not 1 <= header.levels <= MAX_LEVELS:
        raise ValueError(f"A file codes 1 to {MAX_LEVELS} levels. Received: {header.levels}")
    for name in ("height", "width"):
        side = getattr(header, name)
        if not 1 <= side <= MAX_SIDE:
            raise ValueError(
                f"The codec stores images of 1 to {MAX_SIDE} pixels a side. "
                f"Received: {name}={side}")
    if not 0 <= header.fingerprint < 256 or not 0 <= header.checksum < 65536:
        raise ValueError(f"Fingerprint or checksum out of range. Received: {header}")
    return header.prefix() + header.checksum.to_bytes(2, "big")


def parse_header(data, name="file"):
    """`Header` of a file's bytes.

    Raises:
        CodecError: shorter than the header, a wrong magic byte (not a
            tfvqvae file), or a version this release does not read.
    """
    if len(data) < HEADER_BYTES:
        raise CodecError(
            f"{name} is truncated: a tfvqvae codec file has at least {HEADER_BYTES} bytes. "
            f"Received: {len(data)} bytes")
    if data[0] != MAGIC:
        raise CodecError(
            f"{name} is not a tfvqvae codec file: its first byte is 0x{data[0]:02X}, "
            f"not 0x{MAGIC:02X}.")
    version = data[1] >> 4
    if version != VERSION:
        raise CodecError(
            f"{name} is in codec format version {version}; this release reads version "
            f"{VERSION}.")
    size = int.from_bytes(data[2:5], "big")
    return Header(
        levels=((data[1] >> 1) & 0b111) + 1,
        labelled=bool(data[1] & 1),
        height=(size >> 12) + 1,
        width=(size & 0xFFF) + 1,
        fingerprint=data[5],
        checksum=int.from_bytes(data[6:8], "big"),
    )


def checksum(header, label, code_maps, payload_bytes):
    """16 bits of BLAKE2b over the header's bytes 0-5, the label, the maps and the length.

    Args:
        header: the file's `Header` (its checksum field is ignored).
        label: the class label (int) or None.
        code_maps: the coded levels' code maps, top first, integer arrays.
        payload_bytes: the payload's length in bytes (so bytes appended to or
            cut from a file are caught even when the maps still decode).

    Returns:
        int in [0, 65536).
    """
    digest = hashlib.blake2b(header.prefix(), digest_size=2)
    digest.update(b"" if label is None else int(label).to_bytes(4, "little"))
    for codes in code_maps:
        digest.update(np.ascontiguousarray(codes, dtype="<i4").tobytes())
    digest.update(int(payload_bytes).to_bytes(4, "little"))
    return int.from_bytes(digest.digest(), "big")


def fingerprint(models):
    """8 bits identifying a set of trained models: BLAKE2b of their weights.

    Every weight of every model in turn (in ``model.weights`` order): its
    shape, dtype and bytes. Two trainings of one architecture differ; the
    same files loaded twice agree.

    Args:
        models: Keras models (the VQ-VAE, then the priors, top first).

    Returns:
        int in [0, 256).
    """
    digest = hashlib.blake2b(digest_size=1)
    for model in models:
        for weight in model.weights:
            value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
            digest.update(f"{value.shape}{value.dtype}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.digest()[0]
