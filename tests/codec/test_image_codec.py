"""ImageCodec: bit-exact round trips on real images, payload against rate_bits, refusals."""

import math

import numpy as np
import pytest

from tests.codec.codec_helpers import NUM_CLASSES
from tests.codec.codec_helpers import mnist
from tests.codec.codec_helpers import tiny_codec
from tfvqvae.codec import CodecError
from tfvqvae.codec import ImageCodec
from tfvqvae.codec import entropy
from tfvqvae.codec import image_codec
from tfvqvae.codec.file_format import HEADER_BYTES
from tfvqvae.codec.file_format import parse_header
from tfvqvae.codec.resampling import inverse_resize
from tfvqvae.codec.resampling import resize_batch

COUNT = 70  # more than one coding batch (64)


@pytest.fixture(scope="module")
def codec():
    return tiny_codec(0)


@pytest.fixture(scope="module")
def data(shared_data):
    return mnist(shared_data, COUNT)


@pytest.fixture(scope="module")
def files(codec, data):
    images, labels = data
    return codec.compress(images, labels)


def test_round_trip_gives_the_encoders_code_maps_and_label(codec, data, files):
    images, labels = data
    assert len(files) == COUNT and all(isinstance(f, bytes) for f in files)
    codes, decoded_labels = codec.decode_codes(files)
    expected = codec.encode_codes(images)
    for level in ("top", "bottom"):
        np.testing.assert_array_equal(codes[level], expected[level])
    np.testing.assert_array_equal(decoded_labels, labels)


def test_decompressed_images_are_the_decoders_output_at_the_original_size(codec, data, files):
    images, _ = data
    found = codec.decompress(files)
    assert found.shape == (COUNT, 28, 28, 1) and found.dtype == np.float32
    np.testing.assert_array_equal(np.round(found * 255) / 255, found)  # 8-bit values
    # Reference: the decoder on the encoder's codes, clipped, resized back, rounded.
    codes = codec.encode_codes(images)
    decoded = np.clip(codec.model.decode_levels(codes).numpy().astype(np.float64), 0, 1)
    expected = np.round(np.clip(inverse_resize(decoded, (28, 28)), 0, 1) * 255) / 255
    np.testing.assert_allclose(found, expected, atol=1.01 / 255)
    assert np.mean(found == expected.astype(np.float32)) > 0.99


def test_header_says_what_the_file_holds(codec, files):
    header = parse_header(files[0])
    assert (header.levels, header.labelled, header.height, header.width) == (2, True, 28, 28)
    assert header.fingerprint == codec.fingerprint


def test_payload_is_the_rate_plus_at_most_four_bytes(codec, data, files):
    images, labels = data
    rate = codec.rate_bits(images, labels)
    payload = np.array([len(f) - HEADER_BYTES for f in files])
    assert rate.dtype == np.float64 and rate.shape == (COUNT,)
    assert np.all(payload <= rate / 8 * 1.01 + 4), (payload - rate / 8).max()
    assert payload.sum() >= rate.sum() / 8 * 0.99


def test_rate_bits_against_numpy(codec, data):
    images, labels = data
    images, labels = images[:6], labels[:6]
    codes = codec.encode_codes(images)
    expected = np.full(6, math.log2(NUM_CLASSES))
    for level, condition in (("top", None), ("bottom", codes["top"])):
        inputs = {"codes": codes[level], "labels": labels.astype(np.int32)}
        if condition is not None:
            inputs["condition"] = condition
        logits = codec.priors[level](inputs).numpy().astype(np.float64)
        log_p = logits - logits.max(-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_p, codes[level][..., None], -1)[..., 0]
        expected += -picked.sum((1, 2)) / math.log(2)
    np.testing.assert_allclose(codec.rate_bits(images, labels), expected, rtol=1e-5)


def test_files_do_not_depend_on_their_batch(codec, data, files):
    images, labels = data
    assert codec.compress(images[65:66], labels[65:66])[0] == files[65]
    alone = codec.decompress([files[65]])
    np.testing.assert_array_equal(alone[0], codec.decompress(files)[65])
    reordered = codec.decompress(files[::-1][:10])
    np.testing.assert_array_equal(reordered, codec.decompress(files[-10:])[::-1])


def test_uint8_and_float_images_give_the_same_files(codec, data, files):
    images, labels = data
    assert codec.compress(images[:3].astype(np.float32) / 255, labels[:3]) == files[:3]


def test_images_at_the_model_size_and_larger_ones(codec, data):
    images, labels = data
    at_size = resize_batch(images[:4], (32, 32)).numpy()
    found = codec.decompress(codec.compress(at_size, labels[:4]))
    assert found.shape == (4, 32, 32, 1)
    larger = resize_batch(images[:2], (45, 37)).numpy()
    found = codec.decompress(codec.compress(larger, labels[:2]))
    assert found.shape == (2, 45, 37, 1)
    codes, _ = codec.decode_codes(codec.compress(larger, labels[:2]) + codec.compress(
        at_size[:1], labels[:1]))  # mixed sizes decode together as codes
    assert codes["bottom"].shape == (3, 8, 8)


def test_attention_priors_round_trip(data):
    images, labels = data
    codec = tiny_codec(3, attention_every=1)
    assert codec.priors["top"].attention
    files = codec.compress(images[:5], labels[:5])
    codes, _ = codec.decode_codes(files)
    np.testing.assert_array_equal(codes["bottom"], codec.encode_codes(images[:5])["bottom"])


def test_unconditional_priors_need_no_labels(data):
    images, _ = data
    codec = tiny_codec(4, num_classes=None)
    files = codec.compress(images[:3])
    assert not parse_header(files[0]).labelled
    assert codec.decode_codes(files)[1] is None
    with pytest.raises(ValueError, match="not class-conditional"):
        codec.compress(images[:3], np.zeros(3, np.int64))


# ------------------------------------------------------------------ bad files
def test_truncated_files_are_refused(codec, files):
    with pytest.raises(CodecError, match="truncated"):
        codec.decompress([files[0][:5]])
    for index in range(5):  # one byte less than the shortest payload that decodes
        with pytest.raises(CodecError, match="File 0"):
            codec.decompress([files[index][:-1]])


def test_extended_files_are_refused(codec, files):
    for extra in (b"\0", b"\xff", bytes(100)):
        with pytest.raises(CodecError, match="truncated, extended or altered"):
            codec.decompress([files[0] + extra])


def test_no_images_no_files(codec):
    assert codec.compress([]) == []
    assert codec.compress(np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.int64)) == []
    assert codec.rate_bits(np.zeros((0, 28, 28, 1), np.uint8), []).shape == (0,)
    codes, labels = codec.decode_codes([])
    assert codes["top"].shape == (0, 4, 4) and labels.shape == (0,)


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_priors_conditioned_on_the_class_at_some_levels_only(data):
    from tests.codec.codec_helpers import tiny_model
    from tests.codec.codec_helpers import tiny_priors

    images, labels = data
    for labelled in ("top", "bottom"):
        priors = tiny_priors(6)
        other = tiny_priors(6, num_classes=None)
        priors = {level: priors[level] if level == labelled else other[level]
                  for level in ("top", "bottom")}
        codec = ImageCodec(tiny_model(6), priors)
        assert codec.num_classes == NUM_CLASSES
        files = codec.compress(images[:4], labels[:4])
        codes, found = codec.decode_codes(files)
        np.testing.assert_array_equal(found, labels[:4])
        np.testing.assert_array_equal(codes["bottom"], codec.encode_codes(images[:4])["bottom"])
        rate = codec.rate_bits(images[:4], labels[:4])
        payload = np.array([len(f) - HEADER_BYTES for f in files])
        assert np.all(payload <= rate / 8 * 1.01 + 4)


def test_corrupted_payloads_and_headers_are_refused(codec, files):
    rng = np.random.default_rng(0)
    for trial in range(12):
        data = bytearray(files[trial])
        position = int(rng.integers(0, len(data)))
        data[position] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(CodecError):
            codec.decompress([bytes(data)])


def test_files_of_another_model_are_refused(codec, data):
    images, labels = data
    other = tiny_codec(1)
    assert other.fingerprint != codec.fingerprint
    with pytest.raises(CodecError, match="another model"):
        codec.decompress(other.compress(images[:1], labels[:1]))


def test_the_checksum_catches_a_perturbed_distribution(codec, files, monkeypatch):
    honest = entropy.probabilities
    calls = []

    def perturbed(logits):  # the decoder's runtime disagrees at one position
        calls.append(1)
        probs = honest(logits)
        return np.roll(probs, 1, axis=-1) if len(calls) == 5 else probs

    monkeypatch.setattr(image_codec.entropy, "probabilities", perturbed)
    with pytest.raises(CodecError, match="does not decode to the code maps"):
        codec.decompress(files[:1])


def test_decompress_refuses_non_lists_and_mixed_sizes(codec, data, files):
    images, labels = data
    with pytest.raises(TypeError, match="Received: bytes .wrap one file's bytes in a list"):
        codec.decompress(files[0])
    with pytest.raises(TypeError, match="generator"):
        codec.decompress(f for f in files[:2])
    with pytest.raises(TypeError, match="not bytes"):
        codec.decompress(["x"])
    at_size = codec.compress(resize_batch(images[:1], (32, 32)).numpy(), labels[:1])
    with pytest.raises(ValueError, match=r"one image size.*\(28, 28\), \(32, 32\)"):
        codec.decompress(files[:1] + at_size)
    assert codec.decompress([]).shape == (0, 32, 32, 1)


# ----------------------------------------------------------------- bad images
@pytest.mark.parametrize("images,labels,error,match", [
    (np.zeros((28, 28, 1), np.uint8), [1], ValueError, r"batch of images.*\(28, 28, 1\)"),
    (np.zeros((1, 28, 28, 3), np.uint8), [1], ValueError, r"1 channel\(s\).*\(1, 28, 28, 3\)"),
    (np.zeros((1, 5000, 8, 1), np.uint8), [1], ValueError, "1 to 4096"),
    (np.full((1, 8, 8, 1), 255.0, np.float32), [1], ValueError, r"\[0, 1\].*255"),
    (np.full((1, 8, 8, 1), np.nan, np.float32), [1], ValueError, "64 NaN or Inf"),
    (np.zeros((1, 8, 8, 1), np.int16), [1], TypeError, "int16"),
    (np.zeros((2, 8, 8, 1), np.uint8), None, ValueError, "labels=None"),
    (np.zeros((2, 8, 8, 1), np.uint8), [1], ValueError, r"2 integers.*shape \(1,\)"),
    (np.zeros((2, 8, 8, 1), np.uint8), [1, 10], ValueError, r"\[0, 10\).*\[1, 10\]"),
    (np.zeros((1, 8, 8, 1), np.uint8), [0.5], ValueError, "float64"),
])
def test_bad_images_and_labels_are_refused(codec, images, labels, error, match):
    with pytest.raises(error, match=match):
        codec.compress(images, None if labels is None else np.array(labels))


def test_priors_must_cover_and_fit_the_model():
    from tests.codec.codec_helpers import tiny_model
    from tests.codec.codec_helpers import tiny_priors

    model, priors = tiny_model(), tiny_priors()
    with pytest.raises(ValueError, match=r"no prior for \['bottom'\]"):
        ImageCodec(model, {"top": priors["top"]})
    with pytest.raises(ValueError, match="at 64x64"):
        ImageCodec(model, priors, image_size=64)


def test_from_run_reads_a_run_folder(tmp_path, codec, data, files):
    from tfvqvae.run_folder import model_file
    from tfvqvae.run_folder import prior_dir

    codec.model.save(model_file(tmp_path))
    for level, prior in codec.priors.items():
        prior_dir(tmp_path, level).mkdir()
        prior.save(model_file(prior_dir(tmp_path, level)))
    loaded = ImageCodec.from_run(tmp_path)
    assert loaded.fingerprint == codec.fingerprint and loaded.image_shape == (32, 32, 1)
    np.testing.assert_array_equal(loaded.decompress(files[:3]), codec.decompress(files[:3]))



def test_a_prior_with_non_finite_weights_writes_no_file(data):
    images, labels = data
    codec = tiny_codec(5)
    kernel = codec.priors["bottom"].head_logits.kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        codec.compress(images[:2], labels[:2])
