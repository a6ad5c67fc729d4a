"""Image datasets for VQ-VAE training: one interface, in memory or streamed.

Every loader returns an :class:`ImageSource` (:mod:`tfvqvae.data.source`):

* small datasets are held in memory as an :class:`ImageDataset` (digits, IDX,
  CIFAR-10 binary, ``.npz``), ``uint8`` in [0, 255] or ``float32`` in [0, 1];
* an image folder of any size is streamed (:class:`ImageFolder`: only the file
  list is in memory; files are decoded in parallel ``tf.data`` maps), as are
  TFRecord shards of ``tfvqvae prepare`` and TFDS datasets.

``to_tf_dataset`` always yields ``float32`` images in **[0, 1]** of shape
``(B, H, W, C)``; ``as_float`` gives the same range as a NumPy array (for test
sets and samples). Labels are ``int64`` class indices.

Typical use::

    from tfvqvae.data import load_dataset

    train = load_dataset("mnist", "train", data_dir="/path/to/idx/files")
    ds = train.to_tf_dataset(128, shuffle=True, seed=0, repeat=True)

Load-time conversion: ``load_dataset(..., image_size=16, channels=3,
crop="center")`` resizes (bilinear, antialiased), centre-crops and unifies the
colour mode of any source once, in memory (:mod:`tfvqvae.data.transform`;
alpha is dropped, luminance is ITU-R 601-2 as PIL's ``"L"``). An image folder
mixing colour modes becomes RGB without ``channels``; one mixing sizes needs
``image_size``.

Offline: ``mnist``, ``fashion_mnist`` and ``cifar10`` read local files from
``data_dir`` first; TFDS downloads only when its host answers within a few
seconds, else a ``FileNotFoundError`` says which files to put where.

The default dataset, ``DEFAULT_DATASET = "digits"`` (scikit-learn's 8 x 8
digits), needs no network and no files.

The resumable training order, the same for images in memory and for code
records streamed from files: :func:`epoch_batches` gives epoch e's batches as
a function of (seed, e) only, minus the batches a resumed run already took
(:mod:`tfvqvae.data.epochs`; :meth:`ImageDataset.epochs_dataset` uses it).

Code files hold a dataset's discrete code maps for training priors: writing
and reading in :mod:`tfvqvae.data.codes` (:func:`write_codes`,
:func:`load_codes`, :func:`read_code_metadata`), the record format, header and
:func:`model_fingerprint` in :mod:`tfvqvae.data.code_format`.
"""

from tfvqvae.data.codes import (
    code_files,
    default_num_shards,
    expected_metadata,
    load_codes,
    model_fingerprint,
    read_code_metadata,
    write_codes,
)
from tfvqvae.data.digits import load_digits
from tfvqvae.data.epochs import DEFAULT_SHUFFLE_BLOCK, epoch_batches, epoch_order
from tfvqvae.data.files import (
    load_cifar10_folder,
    load_idx_folder,
    load_image_folder,
    load_npz,
    read_idx,
)
from tfvqvae.data.image_dataset import ImageDataset, from_numpy
from tfvqvae.data.image_folder import ImageFolder, open_image_folder
from tfvqvae.data.source import ImageSource
from tfvqvae.data.registry import DEFAULT_DATASET, load_dataset
from tfvqvae.data.image_shards import ImageShards, open_image_shards, write_image_shards
from tfvqvae.data.tfds_loader import TFDSImages, load_tfds, open_tfds

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_SHUFFLE_BLOCK",
    "ImageDataset",
    "code_files",
    "default_num_shards",
    "ImageFolder",
    "ImageShards",
    "ImageSource",
    "TFDSImages",
    "open_image_shards",
    "open_tfds",
    "write_image_shards",
    "open_image_folder",
    "expected_metadata",
    "epoch_batches",
    "epoch_order",
    "from_numpy",
    "load_cifar10_folder",
    "load_codes",
    "load_dataset",
    "load_digits",
    "load_idx_folder",
    "load_image_folder",
    "load_npz",
    "load_tfds",
    "model_fingerprint",
    "read_code_metadata",
    "read_idx",
    "write_codes",
]
