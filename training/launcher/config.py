"""Run configurations: the `TrainConfig` and `PriorConfig` dataclasses and the presets.

TensorFlow-free, so that the ``tfvqvae`` command builds its options from these
fields (type, default, help in the field's metadata) without importing it.
Each field is declared once here; the command line, validation and
``config.json`` all follow from it. Installed as ``tfvqvae_cli.config`` and
re-exported by ``tfvqvae.training.config``.
"""

import argparse
import dataclasses
import math
import re
import types

DEFAULT_DATASET = "digits"  # tfvqvae.data.DEFAULT_DATASET; a test checks they agree
MODELS = ("vqvae", "vqvae2", "hierarchical")  # TrainConfig.model
# TrainConfig.quantizer: the layer each choice builds (`tfvqvae.training.train.build_quantizer`).
QUANTIZERS = ("ema", "vq", "fsq", "lfq", "rvq", "grouped")
# Quantisers whose codes carry a depth axis (Q codes per position).
DEPTH_QUANTIZERS = ("rvq", "grouped")
# Quantisers with a codebook and its settings (k-means, restarts, decay, codebook cost).
STAGE_QUANTIZERS = ("ema", "vq")  # TrainConfig.stage_quantizer
# LookupFreeQuantizer's defaults and limit (tfvqvae.layers.lookup_free_quantizer; a
# test checks they agree).
LFQ_ENTROPY_COST = 0.1
LFQ_MAX_BITS = 30
# FiniteScalarQuantizer's limit on K = Π levels (codes are int32).
FSQ_MAX_CODES = 2**31 - 1

# A code level's name becomes part of a folder name (RUN/prior-<level>):
# letters, digits and "_" only (`tfvqvae.models.level_names` gives top,
# middle, bottom, level_N).
_LEVEL_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def positive_int(text):
    """argparse type: an integer >= 1 (the error names the received text)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer. Received: {text!r}")
    return value


def option(default, help, *, positive=False, choices=None, flag=True, interval=None):
    """A dataclass field that is also a command-line option.

    ``positive``: an integer >= 1 (or None where the default is None),
    checked both by the parser and by the dataclass. ``choices``: the allowed
    values. ``flag=False``: a field without an option of its own.
    ``interval``: for a float, ``(low, high, brackets)`` with brackets one of
    "[]", "[)", "(]", "()": the value must be a finite number in it (a
    NaN or an infinity never is).
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "positive": positive, "choices": choices, "flag": flag,
        "interval": interval})


def number_in(interval):
    """argparse type: a float that `check_interval` accepts, refused at parse time
    (before TensorFlow is imported) with the interval and the received text."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        try:
            check_interval("value", value, interval)
        except ValueError:
            low, high, brackets = interval
            shown = f"{brackets[0]}{low}, {high}{brackets[1]}".replace("inf", "\u221e")
            raise argparse.ArgumentTypeError(
                f"must be a finite number in {shown}. Received: {text!r}") from None
        return value

    return parse


def check_interval(name, value, interval):
    """Raises ValueError unless ``value`` is a finite real number inside ``interval``."""
    low, high, brackets = interval
    text = f"{brackets[0]}{low}, {high}{brackets[1]}".replace("inf", "\u221e")
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not math.isfinite(value) or not (
        (low <= value if brackets[0] == "[" else low < value)
        and (value <= high if brackets[1] == "]" else value < high)
    ):
        raise ValueError(
            f"{name} must be a finite number in {text}. Received: {name}={value!r}"
        )


def value_type(field):
    """The field's type without ``None`` (``int | None`` -> ``int``)."""
    if isinstance(field.type, types.UnionType):
        (kind,) = [t for t in field.type.__args__ if t is not type(None)]
        return kind
    return field.type


def check_compute_options(mixed_precision, jit_compile):
    """Raises ValueError unless ``mixed_precision`` is None/"float16"/"bfloat16"
    and ``jit_compile`` a bool (the options `TrainConfig` and `PriorConfig` share)."""
    if mixed_precision is not None:
        from tfvqvae.distribute import policy_name  # the owner of the policy names

        policy_name(mixed_precision)
    if not isinstance(jit_compile, bool):
        raise ValueError(
            f"jit_compile must be True or False. Received: jit_compile={jit_compile!r}"
        )


class _Config:
    """What both configurations share: field checks and ``config.json`` round trips."""

    def __post_init__(self):
        check_compute_options(self.mixed_precision, self.jit_compile)
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            if value is None and field.default is None:
                continue
            if meta.get("positive") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"{field.name} must be a positive integer. Received: {field.name}={value!r}"
                )
            if meta.get("interval"):
                check_interval(field.name, value, meta["interval"])
            if meta.get("choices") and value not in meta["choices"]:
                allowed = ", ".join(repr(c) for c in meta["choices"])
                raise ValueError(
                    f"{field.name} must be one of {allowed}. Received: {field.name}={value!r}"
                )

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown configuration keys: {unknown}")
        return cls(**values)

    @classmethod
    def options_from_args(cls, args, preset=None, prefix=""):
        """Field values of parsed arguments: ``preset``'s, then the options given.

        ``args`` comes from the parser of `tfvqvae_cli.parser`, whose field
        options (named ``prefix + field``) are None unless given.
        """
        values = dict(preset or {})
        for field in dataclasses.fields(cls):
            value = getattr(args, prefix + field.name, None)
            if value is not None:
                values[field.name] = value
        return values

    @classmethod
    def from_args(cls, args, preset=None, prefix="", saved=None):
        """The configuration of parsed arguments: ``preset``'s values, then the options given.

        ``saved``: the path of a run's ``config.json``; with ``--resume`` its
        values replace the defaults, so that only the options given (and the
        preset) can differ from the run, and `start_run` names each one
        that does.
        """
        values = cls.options_from_args(args, preset, prefix)
        if saved is not None and getattr(args, "resume", False):
            from pathlib import Path

            if Path(saved).is_file():
                values = {**cls.load(saved).to_dict(), **values}
        return cls.from_dict(values)

    @classmethod
    def load(cls, path):
        """The configuration saved at ``path``; ValueError naming the file otherwise."""
        from tfvqvae.run_folder import read_config

        try:
            return cls.from_dict(read_config(path))
        except (ValueError, TypeError) as error:
            message = str(error)
            if str(path) not in message:
                message = f"{path}: {message}"
            raise ValueError(message) from None


DEFAULT_NUM_EMBEDDINGS = 512  # TrainConfig.num_embeddings
DEFAULT_EMBEDDING_DIM = 64  # TrainConfig.embedding_dim


@dataclasses.dataclass
class TrainConfig(_Config):
    """Everything ``tfvqvae train`` needs; saved as ``OUT/config.json``.

    Model sizes follow the VQ-VAE paper's CIFAR-10 setting (Sonnet's
    notebook) unless a preset says otherwise. The codebook defaults (k-means
    initialisation, restarts after 20 unused steps, Adam 2e-3) were chosen by
    ``python bench/codebook_defaults.py`` (bench/RESULTS.md; README "Defaults
    and why"); the ``cifar10`` preset keeps Sonnet's 3e-4. ``batch_size`` is the global
    batch: with R replicas each computes on ``batch_size / R`` images per step
    and the step equals one on the whole batch. ``mixed_precision``
    ("float16", "bfloat16" or None) picks Keras' ``mixed_*`` policy; the
    quantisers keep float32. ``jit_compile`` compiles the train step with XLA. ``model`` is "vqvae" (one code
    level at 1 / 2**num_downsamples), "vqvae2" (top codes at 1/8, bottom
    codes at 1/4) or "hierarchical" (``levels`` = L code maps: the bottom at
    1/4, each level above at half the size of the one below, the top at
    1 / 2**(L+1); named by `tfvqvae.models.level_names`: top, middle, bottom
    for L = 3). Every level's quantiser is built from the same quantiser
    settings. ``levels`` is required with "hierarchical" and refused with
    the other models (they fix their number of levels: 1 and 2); there is no
    default, so that ``--model hierarchical`` never silently picks a depth.

    ``quantizer`` picks every level's quantiser (`QUANTIZERS`): "ema" / "vq"
    (`VectorQuantizerEMA` / `VectorQuantizer`), "fsq"
    (`FiniteScalarQuantizer` of ``fsq_levels``, which fix K = Π levels and
    D = their count), "lfq" (`LookupFreeQuantizer`: K = 2**D; D is
    ``embedding_dim`` when it is not the default 64, else log2
    ``num_embeddings``, which must be a power of two), "rvq"
    (`ResidualVectorQuantizer` of ``num_quantizers`` stages) and "grouped"
    (`GroupedVectorQuantizer` of ``num_groups`` heads). The last two code
    each position with Q indices (``code_depth``); their stages / heads are
    ``stage_quantizer`` ("ema" or "vq"). An option of one quantiser given
    with another (``fsq_levels``, ``lfq_entropy_cost``, ``num_quantizers``,
    ``quantizer_dropout``, ``num_groups``, ``stage_quantizer``,
    ``shared_codebook``), a ``codebook_cost`` where there is no codebook
    loss, and a ``num_embeddings`` / ``embedding_dim`` that contradicts fsq's
    levels or lfq's bits are refused (ValueError naming the option and its
    value); fsq and lfq store the K and D they give.
    """

    out: str = option("runs/vqvae", "output folder (with --preset: runs/PRESET)")
    dataset: str = option(DEFAULT_DATASET, "digits (offline), mnist, fashion_mnist, cifar10, "
                          "any TFDS name, folder:PATH (streamed), tfrecord:PATH (shards of "
                          "tfvqvae prepare, streamed) or npz:PATH")
    data_dir: str | None = option(None, "folder with local files (IDX, CIFAR-10 .bin) or a "
                                  "TFDS data_dir")
    image_size: int | None = option(None, "resize images to this square size at load time "
                                     "(none: the dataset's size)", positive=True)
    crop: str = option("none", "with --image-size: none resizes the whole image, center "
                       "crops its centre to the new aspect first, random crops a window of "
                       "that size at a random place in training batches (streamed datasets)",
                       choices=("none", "center", "random"))
    channels: int | None = option(None, "convert images to 1 (grey) or 3 (RGB) channels "
                                  "(none: the dataset's)", choices=(1, 3))
    random_flip: bool = option(False, "flip training images left-right at random (decided by "
                               "--seed, the epoch and the image, so a resumed run flips the "
                               "same ones)")
    int8_kernels: bool = option(False, "after training, round every kernel to TFLite's "
                                "per-channel int8 grid (tfvqvae.models.kernel_grid), so that "
                                "weight_only TFLite files keep the model's codes; the test "
                                "metrics are the rounded model's")
    skip_corrupt: bool = option(False, "skip image files that cannot be decoded (a warning "
                                "names each) instead of stopping")
    max_train_examples: int | None = option(None, "train on the first N training images "
                                            "(none: all)", positive=True)
    epochs: int = option(10, "passes over the training images", positive=True)
    batch_size: int = option(64, "global batch, split evenly over the replicas", positive=True)
    learning_rate: float = option(2e-3, "Adam learning rate", interval=(0, math.inf, "()"))
    model: str = option("vqvae", "vqvae: one code map; vqvae2: top (1/8) and bottom (1/4) "
                        "code maps, image size divisible by 8; hierarchical: --levels L code "
                        "maps, bottom at 1/4, top at 1/2**(L+1) (image size divisible by "
                        "2**(L+1))", choices=MODELS)
    levels: int | None = option(None, "number of code levels L of --model hierarchical "
                                "(required with it, refused otherwise): 3 gives top, middle, "
                                "bottom", positive=True)
    quantizer: str = option("ema", "quantizer of every level: ema (codebook updated by moving "
                            "averages), vq (by gradients), fsq (finite scalar quantization, "
                            "--fsq-levels), lfq (lookup-free: K = 2**D codes of D bits), rvq "
                            "(residual VQ: --num-quantizers stages) or grouped (--num-groups "
                            "heads of D/H channels); rvq and grouped give several codes per "
                            "position", choices=QUANTIZERS)
    num_embeddings: int = option(DEFAULT_NUM_EMBEDDINGS, "codebook size K (per level; per stage or head of rvq and "
                                 "grouped; fsq: the product of --fsq-levels; lfq: 2**D)",
                                 positive=True)
    embedding_dim: int = option(DEFAULT_EMBEDDING_DIM, "code vector size D (fsq: the number of --fsq-levels; lfq: "
                                "log2 K unless given)", positive=True)
    fsq_levels: str | None = option(None, "values per channel of --quantizer fsq, comma-"
                                    "separated, each >= 2, e.g. 8,5,5,5 (K = 1000, D = 4); "
                                    "required with fsq")
    lfq_entropy_cost: float = option(LFQ_ENTROPY_COST, "weight of the entropy penalty of "
                                     "--quantizer lfq", interval=(0, math.inf, "[)"))
    num_quantizers: int | None = option(None, "stages Q of --quantizer rvq, the codes per "
                                        "position (required with rvq)", positive=True)
    num_groups: int | None = option(None, "heads H of --quantizer grouped, the codes per "
                                    "position; must divide --embedding-dim (required with "
                                    "grouped)", positive=True)
    stage_quantizer: str = option("ema", "codebook update of each stage / head of rvq and "
                                  "grouped: ema or vq (gradients, --codebook-cost)",
                                  choices=STAGE_QUANTIZERS)
    shared_codebook: bool = option(False, "rvq and grouped: one codebook for every stage / head")
    quantizer_dropout: float = option(0.0, "rvq: probability that a training image uses only "
                                      "its first n ~ U{1..Q} stages (SoundStream's quantizer "
                                      "dropout)", interval=(0, 1, "[]"))
    commitment_cost: float = option(1.0, "weight beta of the commitment loss (fsq has none)",
                                    interval=(0, math.inf, "[)"))
    codebook_cost: float = option(1.0, "weight alpha of the codebook loss of --quantizer vq "
                                  "and of rvq / grouped with --stage-quantizer vq (EMA "
                                  "codebooks, fsq and lfq have none)",
                                  interval=(0, math.inf, "[)"))
    decay: float = option(0.8, "EMA decay of --quantizer ema (and of rvq / grouped stages)",
                          interval=(0, 1, "()"))
    kmeans_init: bool = option(True, "initialise the codebook by k-means on the first batch "
                               "(--no-kmeans-init: the initializer's codebook)")
    restart_unused_after: int | None = option(
        20, "move codes unused for this many steps onto encoder outputs", positive=True)
    hidden_channels: int = option(128, "channels of the encoder and decoder", positive=True)
    residual_channels: int = option(32, "hidden channels of each residual layer", positive=True)
    num_residual_layers: int = option(2, "residual layers per stack", positive=True)
    num_downsamples: int = option(2, "stride-2 steps of --model vqvae (codes at 1/2**N); "
                                  "vqvae2 and hierarchical need 2", positive=True)
    normalize_mse: bool = option(True, "divide the reconstruction loss by the training "
                                 "images' variance")
    seed: int = option(0, "seed of weights, codebook and batch order")
    grid_pairs: int = option(16, "test images in reconstructions.png", positive=True)
    mixed_precision: str | None = option(None, "compute in low precision (the quantisers "
                                         "stay float32)", choices=("float16", "bfloat16"))
    jit_compile: bool = option(False, "compile the train step with XLA")

    def __post_init__(self):
        super().__post_init__()
        self._check_quantizer()
        if self.quantizer == "ema" and self.codebook_cost != 1.0:
            raise ValueError(
                "codebook_cost weighs the codebook loss of quantizer='vq'; the EMA quantizer "
                "updates its codebook by moving averages and has no such loss: pass "
                f"--quantizer vq. Received: quantizer='ema', codebook_cost={self.codebook_cost!r}"
            )
        if self.model == "vqvae2" and self.num_downsamples != 2:
            raise ValueError(
                "model='vqvae2' fixes num_downsamples at 2 (bottom codes at 1/4 of "
                "the image, top codes at 1/8). "
                f"Received: num_downsamples={self.num_downsamples!r}"
            )
        if self.model == "hierarchical":
            if self.levels is None:
                raise ValueError(
                    "model='hierarchical' needs levels, the number of code levels "
                    "(--levels L, e.g. --levels 3 for top, middle, bottom). Received: levels=None"
                )
            if self.num_downsamples != 2:
                raise ValueError(
                    "model='hierarchical' fixes num_downsamples at 2 (bottom codes at 1/4 "
                    "of the image, each level above at half the size). "
                    f"Received: num_downsamples={self.num_downsamples!r}"
                )
        elif self.levels is not None:
            fixed = {"vqvae": 1, "vqvae2": 2}[self.model]
            raise ValueError(
                f"levels only applies to model='hierarchical' (model={self.model!r} has "
                f"{fixed} level{'s' if fixed > 1 else ''}): pass --model hierarchical "
                f"--levels {self.levels}. Received: model={self.model!r}, levels={self.levels!r}"
            )

    def _check_quantizer(self):
        """Refuses quantizer options that do not apply to ``quantizer`` (each named with
        its value), and sets K and D of fsq / lfq from their levels / bits."""
        quantizer = self.quantizer

        def refuse(why, received):
            raise ValueError(f"{why}. Received: quantizer={quantizer!r}, {received}")

        only = {  # option: (the quantizers it applies to, its "not given" value)
            "fsq_levels": (("fsq",), None),
            "lfq_entropy_cost": (("lfq",), LFQ_ENTROPY_COST),
            "num_quantizers": (("rvq",), None),
            "quantizer_dropout": (("rvq",), 0.0),
            "num_groups": (("grouped",), None),
            "stage_quantizer": (DEPTH_QUANTIZERS, "ema"),
            "shared_codebook": (DEPTH_QUANTIZERS, False),
        }
        for name, (quantizers, unset) in only.items():
            value = getattr(self, name)
            if quantizer not in quantizers and value != unset:
                refuse(f"{name} only applies to --quantizer {' or '.join(quantizers)}",
                       f"{name}={value!r}")
        if quantizer == "rvq" and self.num_quantizers is None:
            refuse("quantizer='rvq' needs num_quantizers, the stages Q (--num-quantizers Q, "
                   "e.g. --num-quantizers 4)", "num_quantizers=None")
        if quantizer == "grouped":
            if self.num_groups is None:
                refuse("quantizer='grouped' needs num_groups, the heads H (--num-groups H, "
                       "e.g. --num-groups 4)", "num_groups=None")
            if self.embedding_dim % self.num_groups:
                refuse("quantizer='grouped' splits the embedding_dim channels into num_groups "
                       "heads: embedding_dim must be divisible by num_groups",
                       f"embedding_dim={self.embedding_dim}, num_groups={self.num_groups}")
        no_codebook_loss = (quantizer in ("fsq", "lfq")
                            or (quantizer in DEPTH_QUANTIZERS and self.stage_quantizer == "ema"))
        if no_codebook_loss and self.codebook_cost != 1.0:
            where = ("the codebooks of EMA stages / heads have no codebook loss: pass "
                     "--stage-quantizer vq" if quantizer in DEPTH_QUANTIZERS else
                     f"quantizer={quantizer!r} has no codebook, so no codebook loss")
            refuse(f"codebook_cost weighs a codebook loss; {where}",
                   f"codebook_cost={self.codebook_cost!r}")
        if quantizer == "fsq":
            self._set_fsq_sizes(refuse)
        elif quantizer == "lfq":
            self._set_lfq_sizes(refuse)

    def _set_fsq_sizes(self, refuse):
        if self.fsq_levels is None:
            refuse("quantizer='fsq' needs fsq_levels, the values per channel (--fsq-levels "
                   "8,5,5,5 gives K = 1000 codes of D = 4 channels)", "fsq_levels=None")
        levels = self.fsq_levels
        if isinstance(levels, (list, tuple)):  # e.g. [8, 5, 5, 5] in a hand-written config.json
            levels = ",".join(map(str, levels))
        parts = str(levels).replace(" ", "").split(",")
        if not all(p.isdigit() and int(p) >= 2 for p in parts):
            refuse("fsq_levels must be integers >= 2 separated by commas, e.g. 8,5,5,5",
                   f"fsq_levels={self.fsq_levels!r}")
        levels = [int(p) for p in parts]
        codes, dim = math.prod(levels), len(levels)
        if codes > FSQ_MAX_CODES:
            refuse(f"fsq_levels give K = {codes} codes, more than the {FSQ_MAX_CODES} int32 "
                   "codes allow", f"fsq_levels={self.fsq_levels!r}")
        self._set_fsq_sizes_from(refuse, codes, dim)
        self.fsq_levels = ",".join(map(str, levels))

    def _set_lfq_sizes(self, refuse):
        if self.embedding_dim != DEFAULT_EMBEDDING_DIM:  # D given: K = 2**D
            bits = self.embedding_dim
        else:  # D from K
            bits = self.num_embeddings.bit_length() - 1
            if self.num_embeddings != 2**bits or bits < 1:
                refuse("quantizer='lfq' has K = 2**D codes: num_embeddings must be a power "
                       "of two >= 2 (or give --embedding-dim D)",
                       f"num_embeddings={self.num_embeddings}")
        if bits > LFQ_MAX_BITS:
            refuse(f"quantizer='lfq' codes D bits into int32 codes: D must be at most "
                   f"{LFQ_MAX_BITS}", f"embedding_dim={bits}, num_embeddings=2**{bits}")
        if self.num_embeddings not in (DEFAULT_NUM_EMBEDDINGS, 2**bits):
            refuse("quantizer='lfq' has K = 2**D codes of D bits: num_embeddings and "
                   "embedding_dim disagree (a preset may set them): give one of them, or both "
                   "with K = 2**D",
                   f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}")
        self.num_embeddings, self.embedding_dim = 2**bits, bits

    def _set_fsq_sizes_from(self, refuse, codes, dim):
        """Sets K and D from fsq_levels; refuses other values that were asked for."""
        for name, value, default in (("num_embeddings", codes, DEFAULT_NUM_EMBEDDINGS),
                                     ("embedding_dim", dim, DEFAULT_EMBEDDING_DIM)):
            given = getattr(self, name)
            if given not in (default, value):
                refuse(f"fsq_levels={self.fsq_levels!r} give {name} = {value}, not {given} "
                       f"(a preset may set it): pass --{name.replace('_', '-')} {value} or "
                       "other levels", f"{name}={given}")
            setattr(self, name, value)

    @property
    def code_depth(self):
        """Codes per position of every level: ``num_quantizers`` (rvq), ``num_groups``
        (grouped), None for the quantizers of one code per position."""
        return {"rvq": self.num_quantizers, "grouped": self.num_groups}.get(self.quantizer)

    @property
    def size_multiple(self):
        """What image height and width must be divisible by: the top level's factor.

        2**num_downsamples for "vqvae", 8 for "vqvae2", 2**(levels+1) for
        "hierarchical" (the model's ``size_multiple``).
        """
        if self.model == "vqvae":
            return 2**self.num_downsamples
        return 2 ** ((2 if self.model == "vqvae2" else self.levels) + 1)


@dataclasses.dataclass
class PriorConfig(_Config):
    """Everything ``tfvqvae train-prior`` needs; saved as ``config.json``.

    The priors of a run form a chain over its levels, top first: the top
    prior is unconditioned (or class-conditioned, ``class_conditional``) and
    the prior of every lower level is conditioned on the code map of the
    level directly above (bottom on top for VQ-VAE-2; middle on top and
    bottom on middle for three levels). ``level`` is any level of the run;
    ``train-prior`` refuses one the run's code file does not have, naming
    those it has.
    """

    run: str = option("runs/quickstart", "run folder of `tfvqvae train` (with codes/)")
    level: str = option("top", "code level to model, one of the run's levels (top; "
                        "top, bottom; top, middle, bottom; ...): every level below the top "
                        "is modelled given the codes of the level directly above")
    max_train_examples: int | None = option(None, "train on the first N code records "
                                            "(none: all)", positive=True)
    epochs: int = option(10, "passes over the code records", positive=True)
    batch_size: int = option(64, "global batch, split evenly over the replicas", positive=True)
    learning_rate: float = option(1e-3, "Adam learning rate", interval=(0, math.inf, "()"))
    hidden_channels: int = option(64, "channels of the gated PixelCNN", positive=True)
    num_blocks: int = option(6, "gated blocks", positive=True)
    kernel_size: int = option(5, "size of the masked convolutions", positive=True)
    attention_every: int | None = option(None, "a causal self-attention block after every N-th "
                                         "gated block (none: no attention); below "
                                         "--num-blocks", positive=True)
    num_attention_heads: int = option(4, "heads of each attention block", positive=True)
    class_conditional: bool = option(False, "condition the prior on the dataset's class labels")
    seed: int = option(0, "seed of weights and batch order")
    mixed_precision: str | None = option(None, "compute in low precision",
                                         choices=("float16", "bfloat16"))
    jit_compile: bool = option(False, "compile the train step with XLA")

    def __post_init__(self):
        super().__post_init__()
        # Which levels exist is the run's to say (train-prior checks the
        # code file); here only that the name can be a folder name.
        if self.attention_every is not None and self.attention_every >= self.num_blocks:
            raise ValueError(
                "attention_every must be below num_blocks (attention follows a gated block "
                "that has a horizontal output). Received: "
                f"attention_every={self.attention_every}, num_blocks={self.num_blocks}"
            )
        if not isinstance(self.level, str) or not _LEVEL_NAME.match(self.level):
            raise ValueError(
                "level must be the name of a code level (letters, digits, '_'), such as "
                f"top, middle or bottom. Received: level={self.level!r}"
            )


# Named starting points: `tfvqvae train --preset NAME` takes PRESETS[NAME];
# `tfvqvae pipeline` / `train-prior --preset NAME` take PRIOR_PRESETS[NAME]
# for the priors. Each is sized so that `tfvqvae pipeline --preset NAME`
# (train, extract, priors, sample, export + verify) ends within about 10-15
# minutes on two idle CPU cores with a useful result; `python
# bench/presets.py` times it. Estimates from short runs: MNIST VQ-VAE ~0.2 s
# per step of 128, prior ~1 ms per 7x7 code map; CIFAR-10 VQ-VAE ~0.17 s per
# step of 32 (bench/RESULTS.md, cifar_quality).
PRESETS = {
    # The README's quick start: a VQ-VAE-2 small enough to train in about a
    # minute, on a dataset that ships inside scikit-learn (no network).
    "quickstart": {
        "model": "vqvae2",
        "dataset": "digits",
        "image_size": 16,
        "epochs": 25,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "num_embeddings": 64,
        "embedding_dim": 16,
        "hidden_channels": 64,
        "residual_channels": 32,
        "num_downsamples": 2,
        "kmeans_init": True,
        # 47 steps an epoch: restarts after 5 unused steps and a faster EMA
        # (decay 0.9) keep the top codebook in use from the first epoch
        # (test usage after epoch 1: 77 % against 6 % with 20 and 0.99).
        "restart_unused_after": 5,
        "decay": 0.9,
        "commitment_cost": 0.25,
    },
    # 7x7 codes of 28x28 digits; 3 epochs of the first 20 000 images.
    "mnist": {
        "dataset": "mnist",
        "max_train_examples": 20000,
        "epochs": 3,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "num_embeddings": 128,
        "embedding_dim": 32,
        "hidden_channels": 64,
        "residual_channels": 32,
        "num_downsamples": 2,
        "kmeans_init": True,
        "restart_unused_after": 20,
        "commitment_cost": 0.25,  # the preset's measured settings (README table)
        "decay": 0.99,
    },
    # Sonnet's notebook model (8x8 codes, K = 512) with k-means init and
    # restarts, 1000 steps (2 epochs of the first 16 000 images).
    "cifar10": {
        "dataset": "cifar10",
        "max_train_examples": 16000,
        "epochs": 2,
        "batch_size": 32,
        "learning_rate": 3e-4,
        "kmeans_init": True,
        "restart_unused_after": 20,
        "commitment_cost": 0.25,  # the preset's measured settings (README table)
        "decay": 0.99,
    },
}

PRIOR_PRESETS = {
    "quickstart": {
        "epochs": 20, "batch_size": 64, "learning_rate": 2e-3, "hidden_channels": 32,
        "num_blocks": 4, "kernel_size": 3, "class_conditional": True,
    },
    "mnist": {
        "max_train_examples": 20000, "epochs": 3, "batch_size": 128, "learning_rate": 1e-3,
        "hidden_channels": 32, "num_blocks": 4, "kernel_size": 3, "class_conditional": True,
    },
    "cifar10": {
        "max_train_examples": 20000, "epochs": 2, "batch_size": 64, "learning_rate": 1e-3,
        "hidden_channels": 64, "num_blocks": 4, "kernel_size": 3, "class_conditional": True,
    },
}
