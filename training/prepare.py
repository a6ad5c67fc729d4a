"""Pack an image folder into TFRecord shards: the command behind ``tfvqvae prepare``.

    tfvqvae prepare --images FOLDER --out DIR [--split train] [--shards N | --shard-size MB]
                    [--seed 0] [--skip-corrupt] [--overwrite]

writes ``DIR/images-<split>-KKKKK-of-NNNNN.tfrecord`` and ``DIR/dataset.json``
(:func:`tfvqvae.data.image_shards.write_image_shards`, whose module notes
give the record layout); train on them with ``--dataset tfrecord:DIR``.
"""

from tfvqvae.data.image_shards import write_image_shards


def main(args):
    """Entry point of ``tfvqvae prepare`` (``args`` from `tfvqvae_cli.parser`); returns 0.

    Prints one line: the records, shards, classes and image sizes written.

    Raises:
        ValueError, OSError: as `write_image_shards` (the launcher prints
            them as one line and exits with status 2).
    """
    entry = write_image_shards(
        args.images, args.out, split=args.split, num_shards=args.shards,
        shard_size_mb=args.shard_size, seed=args.seed, skip_corrupt=args.skip_corrupt,
        overwrite=args.overwrite,
    )
    count = entry["num_classes"]
    classes = f"{count} class{'es' if count > 1 else ''}" if count else "no labels"
    sizes = (f"{entry['image_sizes'][0][0]}x{entry['image_sizes'][0][1]}"
             if entry["num_image_sizes"] == 1 else f"{entry['num_image_sizes']} image sizes")
    skipped = f", {entry['skipped']} unreadable files skipped" if entry["skipped"] else ""
    print(f"{args.split}: wrote {entry['num_records']} images in {entry['num_shards']} "
          f"shard{'s' if entry['num_shards'] > 1 else ''}, "
          f"{classes}, {sizes}{skipped}: {entry['path']}")
    return 0
