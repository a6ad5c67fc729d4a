"""An image codec: code maps entropy coded under the learned priors.

`ImageCodec` (``ImageCodec.from_run(run)``: compress, decompress,
rate_bits), the file format (`file_format`: an 8-byte header, `CodecError`)
and the range coding (`entropy`, with ``constriction``).
"""

from tfvqvae.codec.file_format import CodecError
from tfvqvae.codec.image_codec import ImageCodec

__all__ = ["CodecError", "ImageCodec"]
