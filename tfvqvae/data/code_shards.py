"""Sharded code files: their names, finding a split's files, and the parallel shard writer.

A split's codes are written as a set of shards beside the split's *base* path
(`tfvqvae.run_folder.code_file`, e.g. ``codes/codes-train.tfrecord``)::

    codes/codes-train-00000-of-00004.tfrecord    records [0, N/4)
    codes/codes-train-00001-of-00004.tfrecord    records [N/4, N/2)
    ...

Each shard is a complete code file with its own header (`tfvqvae.data.code_format`)
holding a contiguous range of the records, so the shards concatenated in index
order give the records in dataset order. The single file ``codes-train.tfrecord``
that tfvqvae wrote before shards is still read (`code_files` resolves either).

Which files a path names (`code_files`):

* an existing file named like a shard: every shard of its set;
* an existing file of any other name: that file alone (the single-file layout);
* a glob pattern (``codes-train-*.tfrecord``): the one set (or single file) it matches;
* a base path that does not exist: the set of shards beside it.
"""

import bisect
import collections
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae.atomic import TEMP_MARKER
from tfvqvae.data.code_format import _header_example
from tfvqvae.data.code_format import _serialize_records

__all__ = [
    "MAX_SHARDS",
    "SHARD_BYTES",
    "ShardWriter",
    "code_files",
    "default_num_shards",
    "estimated_record_bytes",
    "existing_files",
    "shard_bounds",
    "shard_path",
    "temporary_files",
]

#: The most shards a set can have: the index and count have 5 digits.
MAX_SHARDS = 99999
#: The shard size `default_num_shards` aims at, in bytes (estimated).
SHARD_BYTES = 128 * 2**20

_SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})(?P<suffix>\.[^.]*)?$")
_GLOB_CHARS = "*?["
# Serialized batches in flight per writer thread (bounds the memory held).
_IN_FLIGHT_PER_THREAD = 2


# ---------------------------------------------------------------------- names
def shard_path(base, index, num_shards):
    """The path of shard ``index`` of ``num_shards`` of ``base``.

    ``codes/codes-train.tfrecord`` -> ``codes/codes-train-00002-of-00004.tfrecord``.
    """
    base = Path(base)
    return base.with_name(f"{base.stem}-{index:05d}-of-{num_shards:05d}{base.suffix}")


def _parse_shard(path):
    """``(base, index, num_shards)`` of a shard-named path, else None."""
    path = Path(path)
    match = _SHARD_NAME.match(path.name)
    if match is None or path.name.startswith(TEMP_MARKER):
        return None
    index, count = int(match["index"]), int(match["count"])
    if count < 1 or index >= count:
        return None
    return path.with_name(match["stem"] + (match["suffix"] or "")), index, count


def _shard_sets(base):
    """``{num_shards: [present shard paths, by index]}`` beside ``base``."""
    base = Path(base)
    sets = {}
    if base.parent.is_dir():
        for path in sorted(base.parent.iterdir()):
            parsed = _parse_shard(path)
            if parsed is not None and parsed[0] == base:
                sets.setdefault(parsed[2], []).append(path)
    return sets


def _complete_set(base, num_shards):
    paths = [shard_path(base, index, num_shards) for index in range(num_shards)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"code shard {missing[0]} is missing: {len(missing)} of the {num_shards} shards "
            f"of {base} are absent (an extraction killed or a copy left unfinished?)"
        )
    return paths


def code_files(path):
    """The files of the code file or shard set ``path`` names, in record order.

    Args:
        path: the single code file; any shard of a set; a glob pattern
            matching one set or one file; or a set's base path (the single
            file's name, e.g. `tfvqvae.run_folder.code_file`), which names
            the shards beside it when no such file exists.

    Returns:
        A list of `Path`: ``[path]`` for a single file, or every shard of the
        set by index.

    Raises:
        FileNotFoundError: nothing exists under ``path`` (nor shards of it),
            or a shard of the set is missing (the message names it).
        ValueError: ``path`` is ambiguous: a single file and shards of the
            same base, shards of sets of different sizes, or a pattern
            matching several sets.
    """
    path = Path(path)
    if any(char in path.name for char in _GLOB_CHARS):
        matches = sorted(p for p in path.parent.glob(path.name)
                         if not p.name.startswith(TEMP_MARKER))
        if not matches:
            raise FileNotFoundError(f"no code file matches {path}")
        sets = set()
        for match in matches:
            parsed = _parse_shard(match)
            sets.add((parsed[0], parsed[2]) if parsed else (match, 0))
        if len(sets) != 1:
            raise ValueError(
                f"{path} matches more than one code file or shard set: "
                f"{sorted(str(p.name) for p in matches)[:6]}; give one set's base path"
            )
        (base, count), = sets
        return [base] if count == 0 else _complete_set(base, count)
    parsed = _parse_shard(path)
    if parsed is not None:  # a shard's name: its whole set
        return _complete_set(parsed[0], parsed[2])
    sets = _shard_sets(path)
    if path.exists():
        if sets:
            raise ValueError(
                f"{path} and shards of it ({_describe(sets)}) lie side by side: remove the "
                "stale ones (or extract again with --overwrite)"
            )
        return [path]
    if not sets:
        raise FileNotFoundError(
            f"code file not found: {path} (nor its shards "
            f"{shard_path(path, 0, 1).name.replace('00000-of-00001', 'NNNNN-of-NNNNN')})"
        )
    if len(sets) > 1:
        raise ValueError(
            f"shards of {len(sets)} different sets of {path} lie side by side "
            f"({_describe(sets)}): remove the stale ones (or extract again with --overwrite)"
        )
    (count, _), = sets.items()
    return _complete_set(path, count)


def _describe(sets):
    return "; ".join(f"{len(paths)} of {count} shard(s)" for count, paths in sorted(sets.items()))


def existing_files(base):
    """Every file of ``base`` in either layout: the single file and shards of any set."""
    base = Path(base)
    files = [base] if base.is_file() else []
    return files + [path for paths in _shard_sets(base).values() for path in paths]


def temporary_files(base):
    """Temporary files (`tfvqvae.atomic`) a killed writer of ``base`` left, of any process."""
    base = Path(base)
    if not base.parent.is_dir():
        return []
    found = []
    for path in base.parent.glob(f"{TEMP_MARKER}*"):
        _, _, name = path.name[len(TEMP_MARKER):].partition("-")
        parsed = _parse_shard(path.with_name(name))
        if name == base.name or (parsed is not None and parsed[0] == base):
            found.append(path)
    return sorted(found)


# ------------------------------------------------------------------------ size
def estimated_record_bytes(code_shapes, num_embeddings):
    """Bytes of one serialized record, about: each code a varint of its level's K - 1.

    ``code_shapes`` gives (h, w), or (h, w, Q) for a level with a depth axis.
    """
    size = 32  # the Example, the label and their framing
    for level, shape in code_shapes.items():
        code_bytes = max(1, math.ceil(max(1, int(num_embeddings[level]) - 1).bit_length() / 7))
        size += 24 + len(level) + math.prod(int(s) for s in shape) * code_bytes
    return size


def default_num_shards(num_records, code_shapes, num_embeddings, shard_bytes=SHARD_BYTES):
    """How many shards `write_codes` writes unless told: shards of about ``shard_bytes``.

    One shard for anything under ~128 MB (MNIST, CIFAR-10); ImageNet's 1.28 M
    images at 256x256 (VQ-VAE-2: 32x32 + 64x64 codes, K = 512, ~10 KB a
    record) give ~100 shards of ~13 000 records.

    Args:
        num_records: records to write.
        code_shapes: ``{level: (h, w)}`` (``(h, w, Q)`` for a level with a
            depth axis).
        num_embeddings: ``{level: K}``.
        shard_bytes: the target shard size in bytes.

    Returns:
        An int in [1, `MAX_SHARDS`].
    """
    total = num_records * estimated_record_bytes(code_shapes, num_embeddings)
    return int(min(MAX_SHARDS, max(1, math.ceil(total / shard_bytes))))


def shard_bounds(num_records, num_shards):
    """Record ``i`` of ``num_records`` goes to shard ``s`` with ``bounds[s] <= i < bounds[s+1]``.

    Contiguous ranges whose sizes differ by at most one.
    """
    return [s * num_records // num_shards for s in range(num_shards + 1)]


# ---------------------------------------------------------------------- writer
class ShardWriter:
    """Writes ``num_shards`` shards of ``base`` atomically, serializing batches in parallel.

    ``add`` takes a batch of codes; its records are serialized by a pool of
    threads (the NumPy parts release the GIL, so this overlaps the model
    encoding the next batch in the caller's thread) and appended in order to
    the shard(s) their indices fall in; a finished shard is flushed and
    fsynced by the pool while the next one fills. Every shard is written
    under a temporary name (`tfvqvae.atomic.TEMP_MARKER`) and all are renamed
    by `commit`, after which files of ``base`` in the other layouts (a single
    file, sets of other sizes) are removed. `abort` (or leaving the ``with``
    block by an exception) removes the temporary files and leaves what
    existed untouched.

    Args:
        base: the set's base path (`shard_path` names the shards from it).
        metadata: the header fields common to the shards (a single-file
            header: ``num_records`` is the set's total); each shard's header
            adds ``shard_index``, ``num_shards``, ``total_records`` and its
            own ``num_records``.
        num_shards: int in [1, `MAX_SHARDS`]; shards may be empty.
        threads: serializing threads. Defaults to min(4, CPUs).

    Raises:
        ValueError: from `add`, more records than ``metadata`` promises;
            from `commit`, fewer.
    """

    def __init__(self, base, metadata, num_shards, threads=None):
        self.base = Path(base)
        self.metadata = metadata
        self.num_shards = num_shards
        self.total = metadata["num_records"]
        self.bounds = shard_bounds(self.total, num_shards)
        self.paths = [shard_path(self.base, s, num_shards) for s in range(num_shards)]
        self.temps = [p.with_name(f"{TEMP_MARKER}{os.getpid()}-{p.name}") for p in self.paths]
        threads = threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tfvqvae-codes")
        self._max_in_flight = threads * _IN_FLIGHT_PER_THREAD
        self._pending = collections.deque()  # (shard, future of records), in order
        self._syncs = []
        self._writer = None
        self._shard = -1  # the shard open in self._writer
        self._counts = [0] * num_shards
        self.written = 0  # records handed to add()

    def __enter__(self):
        self.base.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.commit()
        else:
            self.abort()
        return False

    def add(self, codes, labels):
        """Queues a batch: ``codes`` {level: int (B, h*w)} (row-major), ``labels`` int (B,)."""
        labels = np.asarray(labels).reshape(-1)
        size, first = labels.shape[0], self.written
        if first + size > self.total:
            raise ValueError(f"wrote more than the {self.total} code records the header "
                             f"promises ({first + size})")
        self.written += size
        offset = 0
        while offset < size:  # split the batch where it crosses shard boundaries
            shard = bisect.bisect_right(self.bounds, first + offset) - 1
            take = min(size - offset, self.bounds[shard + 1] - (first + offset))
            part = slice(offset, offset + take)
            chunk = {level: values[part] for level, values in codes.items()}
            self._pending.append((shard, self._pool.submit(_serialize_records, chunk,
                                                           labels[part])))
            offset += take
        while len(self._pending) > self._max_in_flight:
            self._write_oldest()

    def _write_oldest(self):
        shard, future = self._pending.popleft()
        records = future.result()
        while self._shard < shard:
            self._next_shard()
        for record in records:
            self._writer.write(record)
        self._counts[shard] += len(records)

    def _next_shard(self):
        if self._writer is not None:
            self._finish(self._writer, self.temps[self._shard])
        self._shard += 1
        index = self._shard
        header = dict(self.metadata, num_records=self.bounds[index + 1] - self.bounds[index],
                      shard_index=index, num_shards=self.num_shards, total_records=self.total)
        self._writer = tf.io.TFRecordWriter(str(self.temps[index]))
        self._writer.write(_header_example(header).SerializeToString())

    def _finish(self, writer, temp):
        writer.close()

        def sync():
            # NB: TFRecordWriter flushes but does not fsync; do it before the rename.
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())

        self._syncs.append(self._pool.submit(sync))

    def commit(self):
        """Writes what is queued, checks every shard's count, renames the set into place."""
        try:
            while self._pending:
                self._write_oldest()
            while self._shard < self.num_shards - 1:  # empty shards still get a header
                self._next_shard()
            self._finish(self._writer, self.temps[self._shard])
            self._writer = None
            for sync in self._syncs:
                sync.result()
            if self.written != self.total:
                raise ValueError(f"wrote {self.written} code records of the {self.total} "
                                 "the header promises")
            for index, count in enumerate(self._counts):
                wanted = self.bounds[index + 1] - self.bounds[index]
                if count != wanted:  # a bug here, not bad data: never rename such a set
                    raise AssertionError(f"shard {index} got {count} records, not {wanted}")
            for temp, path in zip(self.temps, self.paths):
                try:
                    os.replace(temp, path)
                except OSError as error:
                    raise type(error)(error.errno, f"Could not write {path}: "
                                      f"{error.strerror or error}") from error
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown()
        keep = set(self.paths)
        for stale in existing_files(self.base):
            if stale not in keep:
                stale.unlink()

    def abort(self):
        """Drops everything queued and removes the temporary files."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        for temp in self.temps:
            if temp.exists():
                temp.unlink()
