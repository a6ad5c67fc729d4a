"""Can the exported ``sample`` signature (attention priors) leave the SavedModel?

    python bench/sample_conversion.py [--out bench/scratch/sample_conversion]
                                      [--opsets 17] [--no-attention] [--keep]
                                      [--no-write]

Builds a tiny untrained VQ-VAE-2 at 32x32 (4x4 top codes, K = 16; 8x8 bottom
codes, K = 12) with class-conditional gated PixelCNN priors as
tests/export/test_sample_attention.py does: a causal self-attention block
after every gated block but the last (top: 2 blocks, 2 heads; bottom: 3
blocks, 4 heads, conditioned on the top codes), whose output projections
(zero at initialisation, which makes attention the identity) are randomised.
``--no-attention`` drops the attention blocks. It exports the SavedModel with
``tfvqvae.export.export_saved_model(..., sample_method="cached")`` into a
temporary folder under ``--out`` (removed at the end unless ``--keep``) and
then tries, each step on its own (an exception is recorded and the next step
runs):

0. the SavedModel's ``sample`` signature itself (load, run);
1. TFLite, built-in ops only (``TFLiteConverter.from_saved_model``, signature
   ``sample``); the converter stops at its first failing pass, so row 1'
   converts again with the tensor lists left unlowered (the private flag
   ``_experimental_lower_tensor_list_ops = False``), where the error names
   every op that is not a built-in;
2. TFLite with ``SELECT_TF_OPS`` added: convert, list the operators, then run
   the file with ``ai_edge_litert`` and with ``tf.lite.Interpreter``;
3. tf2onnx (``tfvqvae.export.onnx.convert_onnx``, as ``tfvqvae export`` calls
   it; opset 17, or each of ``--opsets``), list the op types that are not ONNX
   operators, load and run with onnxruntime;
4. a SavedModel whose ``sample`` runs ``sampling.levels_sampler(chain, batch,
   "compiled")`` (the XLA-compiled sampler): save, load, run; the first call
   for batch 5 and for a new batch size (3) are timed in the loading process
   (nothing compiled before the save, so each first call compiles), and the
   saved graphs are searched for ``_XlaMustCompile`` (also in the exported
   SavedModel of step 0);
5. the same cached sampler with its Gumbel noise as an input instead of drawn
   from the seed, converted with tf2onnx (``from_function``, first opset) and
   run with onnxruntime;
6. that noise-input function converted to TFLite, built-ins only and with
   ``SELECT_TF_OPS`` (run with ``ai_edge_litert``).

For 5 and 6 the script patches ``tfvqvae.models.sampling.gumbel_noise``
while it traces (``noise_from_inputs``): the patched function returns the
function's noise inputs, top level first, instead of drawing noise from the
seed. The noise fed in is what the unpatched ``gumbel_noise`` draws for
the seed, so the codes can be compared with the naive sampler's. The
probe's third variant (the cached sampler's loops writing into tensors
instead of TensorArrays, which then converted to built-in TFLite) needs a
copy of ``cached_sampler`` (about 100 lines of library code) and is not
run here.

"Codes = naive" compares every level's codes with
``sampling.sample_levels(..., method="naive")`` (a full forward pass of each
prior per position, no caches) for labels [0, 9, 2, 2, 7] with (seed 0,
temperature 1.0) and (seed 123, temperature 0.5); image differences are the
largest absolute difference from ``model.decode_levels`` of those codes.
Seconds are wall time on a shared machine: convert = conversion (or, for
step 4, save + load; for step 0, export + load), run = the first call.

Claims tested (README, "Export", the paragraph on the ``sample``
signature): built-in TFLite refuses (``tf.TensorListReserve``,
``tf.StatelessRandomGetKeyCounter``); SELECT_TF_OPS converts with 5 select
ops (the random ops and TensorLists), attention as BATCH_MATMUL, SCATTER_ND,
SOFTMAX, WHILE, but ai-edge-litert has no Flex delegate to run it; tf2onnx
converts with ``StatelessRandomGetKeyCounter`` / ``StatelessRandomUniformV2``
left in and onnxruntime refuses the graph; the XLA-compiled SavedModel gives
the same codes but compiles again (7-9 s) for every new batch size, and the
exported signature carries no XLA; with the noise as an input, ONNX gives
the naive sampler's codes exactly.
"""

import argparse
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bench/ for its helpers; tfvqvae is the installed package (pip install -e .).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfvqvae  # noqa: E402
from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae.export import export_saved_model  # noqa: E402
from tfvqvae.models import sampling  # noqa: E402

TINY = dict(image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1)
PRIOR = dict(hidden_channels=8, kernel_size=3)
IMAGE_SHAPE = (32, 32, 1)
LABELS = np.array([0, 9, 2, 2, 7], np.int32)
SETTINGS = ((0, 1.0), (123, 0.5))  # (seed, temperature)
REPO = Path(__file__).resolve().parent.parent
SCRATCH = None  # the run's temporary folder, hidden in error lines
HEADER = ["#", "target", "converts", "runs", "codes = naive", "convert (s)", "run (s)",
          "detail", "error (first line)"]


# ------------------------------------------------------------------ model
def build(attention=True):
    """A VQVAE2 (32x32 images) and {level: PixelCNNPrior}, as the export test builds them."""
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE2(**TINY, top_quantizer=tfvqvae.VectorQuantizer(16, 4, seed=0),
                           bottom_quantizer=tfvqvae.VectorQuantizer(12, 4, seed=1))
    model(np.zeros((1, *IMAGE_SHAPE), np.float32))
    shapes = model.code_shapes(IMAGE_SHAPE[:2])
    top_attention = dict(attention_every=1, num_attention_heads=2) if attention else {}
    bottom_attention = dict(attention_every=1, num_attention_heads=4) if attention else {}
    top = tfvqvae.PixelCNNPrior(16, shapes["top"], num_blocks=2, num_classes=10,
                                **top_attention, **PRIOR)
    bottom = tfvqvae.PixelCNNPrior(12, shapes["bottom"], num_blocks=3, num_classes=10,
                                   condition_num_embeddings=16, condition_shape=shapes["top"],
                                   **bottom_attention, **PRIOR)
    rng = np.random.default_rng(1)
    for prior in (top, bottom):
        assert bool(prior.attention_blocks) == attention
        for block in prior.attention_blocks:  # zero at first: attention would be a no-op
            kernel = block.output_projection.kernel
            kernel.assign(rng.normal(0.0, 0.5, kernel.shape).astype("float32"))
    return model, {"top": top, "bottom": bottom}


def references(model, priors):
    """{(seed, temperature): {"top", "bottom", "images"}} from the naive Keras sampler."""
    refs = {}
    for seed, temperature in SETTINGS:
        codes = sampling.sample_levels(priors, labels=LABELS, temperature=temperature,
                                       seed=seed, method="naive")
        refs[seed, temperature] = {level: c.numpy() for level, c in codes.items()}
        refs[seed, temperature]["images"] = model.decode_levels(codes).numpy()
    return refs


# ------------------------------------------------------------------ bookkeeping
class Step:
    """One table row; ``attempt`` runs a phase and records its exception, if any."""

    def __init__(self, number, target):
        self.number, self.target = number, target
        self.converts = self.runs = self.codes = "—"
        self.convert_s = self.run_s = "—"
        self.detail = []
        self.error = None

    def attempt(self, phase, fn):
        """Runs ``fn()``; returns (ok, result, seconds). A failure is recorded, not raised."""
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001 (every converter failure is a result)
            seconds = time.perf_counter() - start
            if self.error is None:
                self.error = (phase, error)
            print(f"[{self.number}] {phase} FAILED after {seconds:.1f}s:", flush=True)
            traceback.print_exception(type(error), error, error.__traceback__, limit=2)
            return False, None, seconds
        seconds = time.perf_counter() - start
        print(f"[{self.number}] {phase} ok in {seconds:.1f}s", flush=True)
        return True, result, seconds

    def error_line(self):
        if self.error is None:
            return ""
        phase, error = self.error
        text = str(error)
        if SCRATCH is not None:
            text = text.replace(str(SCRATCH), "<scratch>")
        text = text.replace(str(REPO) + os.sep, "")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"{phase}: {type(error).__name__}: {lines[0] if lines else ''}"

    def row(self):
        line = self.error_line()
        short = line if len(line) <= 90 else line[:89] + "…"
        return [self.number, self.target, self.converts, self.runs, self.codes,
                self.convert_s, self.run_s, "; ".join(self.detail), short.replace("|", "\\|")]


def seconds(value):
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def yes_no(flag):
    return "yes" if flag else "no"


def compare(outputs, refs):
    """(all codes equal, detail) for {(seed, temperature): outputs dict}."""
    equal, worst = True, 0.0
    mismatches = {}
    for key, out in outputs.items():
        ref = refs[key]
        for level in ("top", "bottom"):
            got = np.asarray(out[f"{level}_codes"])
            same = got.shape == ref[level].shape and np.array_equal(got, ref[level])
            equal &= same
            if not same:
                mismatches[f"{level}@seed{key[0]}"] = (
                    int((got != ref[level]).sum()) if got.shape == ref[level].shape else "shape")
        worst = max(worst, float(np.abs(np.asarray(out["images"]) - ref["images"]).max()))
    detail = f"image max diff {worst:.1e}"
    if mismatches:
        detail += f", mismatching codes {mismatches}"
    return equal, detail


def op_names_in(error):
    """The TF op names a converter error names ("'tf.Foo' op ...")."""
    return sorted(set(re.findall(r"'(tf\.\w+)' op", str(error))))


def runtime_refusal(error):
    """A short reading of a runtime error (the op it could not prepare or load)."""
    text = str(error)
    flex = re.search(r"\((Flex\w+)\) failed to prepare", text)
    if flex:
        return f"no Flex delegate ({flex.group(1)} failed to prepare)"
    missing = re.search(r"No Op registered for (\w+) with domain_version of (\d+)", text)
    if missing:
        return f"no op {missing.group(1)} (domain version {missing.group(2)})"
    return ""


# ------------------------------------------------------------------ TFLite
def tflite_operators(path):
    from tfvqvae.export.tflite import tflite_operators as read

    return sorted(read(path))


def describe_tflite(path):
    ops = tflite_operators(path)
    select = [op.removeprefix("CUSTOM:") for op in ops if op.startswith("CUSTOM:Flex")]
    attention_ops = [op for op in ("BATCH_MATMUL", "SCATTER_ND", "SOFTMAX", "WHILE") if op in ops]
    return (f"{len(select)} select ops: {', '.join(select) or 'none'}; "
            f"of BATCH_MATMUL/SCATTER_ND/SOFTMAX/WHILE: {', '.join(attention_ops) or 'none'}; "
            f"{Path(path).stat().st_size / 1024:.0f} KiB")


def tflite_run(path, runtime, feeds_by_key):
    """{key: outputs} from the file's only signature, in ``runtime`` (litert or tf.lite)."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(path))
    (key,) = interpreter.get_signature_list()
    runner = interpreter.get_signature_runner(key)
    return {k: runner(**feeds) for k, feeds in feeds_by_key.items()}


def tflite_steps(number, label, convert, feeds_by_key, refs, scratch, runtimes,
                 variants=("builtins", "select")):
    """Rows for one TFLite target: convert (``variants`` of `convert`) and run."""
    rows = []
    targets = {"builtins": "built-in ops", "select": "+ SELECT_TF_OPS",
               "builtins-unlowered": "built-in ops, tensor lists not lowered"}
    suffixes = {"builtins": "a", "select": "b", "builtins-unlowered": "a'"}
    for ops in variants:
        target = f"TFLite {label}, {targets[ops]}"
        step = Step(f"{number}{suffixes[ops]}", target)
        rows.append(step)
        ok, content, took = step.attempt("convert", lambda: convert(ops))
        step.converts, step.convert_s = yes_no(ok), seconds(took)
        if not ok:
            named = op_names_in(step.error[1])
            step.detail.append(f"TF ops the error names: {', '.join(named) or 'none'}")
            continue
        path = scratch / f"{label.replace(' ', '_')}_{ops}.tflite"
        path.write_bytes(content)
        step.detail.append(describe_tflite(path))
        for i, runtime in enumerate(runtimes):
            run_step = step if i == 0 else Step(f"{step.number}'", f"{target} (same file)")
            if i:
                rows.append(run_step)
                run_step.converts = "(above)"
            run_step.target += f", run with {'ai_edge_litert' if runtime == 'litert' else 'tf.lite.Interpreter'}"
            ok, outputs, took = run_step.attempt(
                f"run[{runtime}]", lambda: tflite_run(path, runtime, feeds_by_key))
            record_run(run_step, ok, outputs, took, refs, "did not run")
    return rows


def record_run(step, ok, outputs, took, refs, refusal):
    """Fills a row's run columns: ran or not, seconds, codes equal to the reference."""
    step.runs, step.run_s = yes_no(ok), seconds(took)
    if ok:
        equal, detail = compare(outputs, refs)
        step.codes = yes_no(equal)
        step.detail.append(detail)
    else:
        step.detail.append(runtime_refusal(step.error[1]) or refusal)


# ------------------------------------------------------------------ ONNX
def foreign_onnx_ops(proto):
    """Op types in the graph (subgraphs too) that are not operators of their ONNX domain."""
    import onnx

    found = set()

    def visit(graph):
        for node in graph.node:
            if not onnx.defs.has(node.op_type, node.domain or ""):
                found.add(node.op_type)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(proto.graph)
    return sorted(found)


def onnx_step(number, target, convert, feeds_by_key, refs, path):
    """One row: convert to ONNX, list foreign ops, load and run with onnxruntime."""
    import onnxruntime as ort

    step = Step(number, target)
    ok, proto, took = step.attempt("convert", convert)
    step.converts, step.convert_s = yes_no(ok), seconds(took)
    if not ok:
        return step
    foreign = foreign_onnx_ops(proto)
    step.detail.append(f"non-ONNX ops left in: {', '.join(foreign) or 'none'}")
    path.write_bytes(proto.SerializeToString())

    def run():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return {key: dict(zip(names, session.run(None, feeds)))
                for key, feeds in feeds_by_key.items()}

    ok, outputs, took = step.attempt("onnxruntime", run)
    record_run(step, ok, outputs, took, refs, "onnxruntime refused")
    return step


# ------------------------------------------------------------------ SavedModel
def xla_marked(saved_model_dir):
    """How many functions / nodes of a SavedModel carry ``_XlaMustCompile = true``."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    count = 0
    for graph in proto.meta_graphs:
        nodes = list(graph.graph_def.node)
        for function in graph.graph_def.library.function:
            count += bool(function.attr["_XlaMustCompile"].b)
            nodes += list(function.node_def)
        count += sum(bool(node.attr["_XlaMustCompile"].b) for node in nodes)
    return count


def signature_feeds(seed, temperature, labels=LABELS):
    return dict(seed=np.array(seed, np.int64), temperature=np.array(temperature, np.float32),
                labels=np.asarray(labels, np.int32))


def call_signature(signature, feeds):
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


def exported_step(model, priors, refs, export_dir):
    step = Step("0", "SavedModel `sample` as exported (cached sampler)")

    def export_and_load():
        export_saved_model(model, export_dir, IMAGE_SHAPE, priors, sample_method="cached")
        return tf.saved_model.load(str(export_dir)).signatures["sample"]

    ok, signature, took = step.attempt("export + load", export_and_load)
    step.converts, step.convert_s = yes_no(ok), seconds(took)
    if not ok:
        return step, False
    step.detail.append(f"functions/nodes with _XlaMustCompile: {xla_marked(export_dir)}")
    outputs, first = {}, None
    for key in SETTINGS:
        ok, out, took = step.attempt(f"call seed={key[0]}", lambda: call_signature(
            signature, signature_feeds(*key)))
        if not ok:
            break
        first = took if first is None else first
        outputs[key] = out
    step.runs = yes_no(ok)
    if ok:
        step.run_s = seconds(first)
        equal, detail = compare(outputs, refs)
        step.codes = yes_no(equal)
        step.detail.append(detail)
    return step, True


class CompiledSampler(tf.Module):
    """A module whose ``sample`` runs the XLA-compiled cached sampler."""

    def __init__(self, model, priors):
        super().__init__()
        self.model = model
        self.prior_list = list(priors.values())  # tracked for saving
        self._chain = dict(priors)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="seed"),
                                  tf.TensorSpec([], tf.float32, name="temperature"),
                                  tf.TensorSpec([None], tf.int32, name="labels")])
    def sample(self, seed, temperature, labels):
        draw = sampling.levels_sampler(self._chain, tf.shape(labels)[0], "compiled")
        codes = draw(labels, temperature, seed)
        return {"top_codes": codes["top"], "bottom_codes": codes["bottom"],
                "images": self.model.decode_levels(codes)}


def compiled_step(model, priors, refs, path):
    step = Step("4", "SavedModel around `levels_sampler(..., \"compiled\")`")

    def save_and_load():
        # Nothing is called before saving: the loaded function's first call per
        # batch size is its XLA compilation, as in a fresh serving process.
        module = CompiledSampler(model, priors)
        tf.saved_model.save(module, str(path), signatures={"sample": module.sample})
        return tf.saved_model.load(str(path)).signatures["sample"]

    ok, signature, took = step.attempt("save + load", save_and_load)
    step.converts, step.convert_s = yes_no(ok), seconds(took)
    if not ok:
        return step
    step.detail.append(f"functions/nodes with _XlaMustCompile: {xla_marked(path)}")
    calls = [("batch 5, first call", SETTINGS[0], LABELS),
             ("batch 5, again", SETTINGS[1], LABELS),
             ("batch 3, first call", SETTINGS[0], LABELS[:3]),
             ("batch 3, again", SETTINGS[1], LABELS[:3])]
    outputs, times = {}, []
    for name, key, labels in calls:
        ok, out, took = step.attempt(name, lambda: call_signature(
            signature, signature_feeds(*key, labels=labels)))
        if not ok:
            break
        times.append(f"{name} {seconds(took)} s")
        if len(labels) == len(LABELS):
            outputs[key] = out
    step.runs = yes_no(ok)
    if times:
        step.run_s = times[0].split()[-2]
        step.detail.append(", ".join(times))
    if len(outputs) == len(SETTINGS):
        equal, detail = compare(outputs, refs)
        step.codes = yes_no(equal)
        step.detail.append(detail)
    return step


# ------------------------------------------------------------------ noise as input
@contextlib.contextmanager
def noise_from_inputs(noises):
    """Patches ``sampling.gumbel_noise`` to return ``noises`` in call order (top level first).

    The samplers call ``gumbel_noise(batch, h, w, K, seed)`` once per level
    while they are traced; the patch hands out the given (H, W, B, K) tensors
    instead (checking H, W, K), so the traced graph takes the noise as an
    input and holds no random op. Undone on exit.
    """
    queue = list(noises)
    original = sampling.gumbel_noise

    def given(batch, height, width, num_embeddings, seed):
        noise = queue.pop(0)
        expected = [height, width, None, num_embeddings]
        if [noise.shape[0], noise.shape[1], None, noise.shape[3]] != expected:
            raise ValueError(f"noise of shape {noise.shape} given for a level of {expected}")
        return noise

    sampling.gumbel_noise = given
    try:
        yield
    finally:
        sampling.gumbel_noise = original


def noise_function(model, priors):
    """tf.function (noise_top, noise_bottom, temperature, labels) -> codes, images."""
    chain = dict(priors)
    specs = [tf.TensorSpec([*prior.code_shape, None, prior.num_embeddings], tf.float32,
                           name=f"noise_{level}") for level, prior in chain.items()]
    specs += [tf.TensorSpec([], tf.float32, name="temperature"),
              tf.TensorSpec([None], tf.int32, name="labels")]

    @tf.function(input_signature=specs)
    def sample(noise_top, noise_bottom, temperature, labels):
        with noise_from_inputs([noise_top, noise_bottom]):
            draw = sampling.levels_sampler(chain, tf.shape(labels)[0], "cached")
            codes = draw(labels, temperature, tf.constant(0, tf.int64))  # seed unused
        return {"top_codes": codes["top"], "bottom_codes": codes["bottom"],
                "images": model.decode_levels(codes)}

    return sample, specs


def noise_feeds(priors, seed, temperature):
    """The noise ``gumbel_noise`` draws for ``seed`` (level k: seed + 1000 k), as inputs."""
    feeds = {}
    for k, (level, prior) in enumerate(priors.items()):
        feeds[f"noise_{level}"] = sampling.gumbel_noise(
            len(LABELS), *prior.code_shape, prior.num_embeddings,
            tf.constant(seed + sampling.LEVEL_SEED_STRIDE * k, tf.int64)).numpy()
    feeds["temperature"] = np.array(temperature, np.float32)
    feeds["labels"] = LABELS
    return feeds


def noise_steps(model, priors, refs, scratch, opset):
    import tf2onnx

    sample, specs = noise_function(model, priors)
    concrete = sample.get_concrete_function()  # traced once, with the patch
    feeds = {key: noise_feeds(priors, *key) for key in SETTINGS}
    check = Step("5a", "noise as input, in TF (check of the patch)")
    ok, outputs, took = check.attempt("TF call", lambda: {
        key: {k: v.numpy() for k, v in concrete(**{n: tf.constant(v) for n, v in f.items()}).items()}
        for key, f in feeds.items()})
    check.converts, check.runs, check.run_s = "—", yes_no(ok), seconds(took)
    if ok:
        equal, detail = compare(outputs, refs)
        check.codes = yes_no(equal)
        check.detail.append(detail)
    rows = [check]
    rows.append(onnx_step(
        "5b", f"noise as input → ONNX (tf2onnx from_function, opset {opset}) + onnxruntime",
        lambda: tf2onnx.convert.from_function(sample, input_signature=specs, opset=opset)[0],
        feeds, refs, scratch / f"noise_{opset}.onnx"))

    trackable = tf.Module()
    trackable.model, trackable.priors = model, list(priors.values())

    def convert(ops):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if ops == "select" else [])
        return converter.convert()

    rows += tflite_steps(6, "noise as input", convert, feeds, refs, scratch, ["litert"])
    return rows


# ------------------------------------------------------------------ main
def run_all(args, scratch):
    from tfvqvae.export.onnx import convert_onnx

    model, priors = build(attention=not args.no_attention)
    start = time.perf_counter()
    refs = references(model, priors)
    naive_s = time.perf_counter() - start
    print(f"naive references: {naive_s:.1f}s", flush=True)
    export_dir = scratch / "savedmodel"
    rows = []
    step, exported = exported_step(model, priors, refs, export_dir)
    rows.append(step)
    if exported:
        def convert(ops):
            converter = tf.lite.TFLiteConverter.from_saved_model(
                str(export_dir), signature_keys=["sample"])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
                [tf.lite.OpsSet.SELECT_TF_OPS] if ops == "select" else [])
            if ops == "builtins-unlowered":
                # The built-in conversion stops at the first pass that fails
                # (lowering the TensorArrays' tensor lists); with that pass
                # off (a private converter flag) the error lists every op
                # that is not a built-in, the random ops included.
                converter._experimental_lower_tensor_list_ops = False
            return converter.convert()

        feeds = {key: signature_feeds(*key) for key in SETTINGS}
        tflite_rows = tflite_steps(1, "`sample`", convert, feeds, refs, scratch,
                                   ["litert", "tf.lite"],
                                   ("builtins", "builtins-unlowered", "select"))
        for row in tflite_rows:  # 1a is built-ins (step 1), 1b... select ops (step 2)
            row.number = row.number.replace("1a", "1").replace("1b", "2")
        rows += tflite_rows
        for i, opset in enumerate(args.opsets):
            rows.append(onnx_step(
                "3" + "'" * i, f"`sample` → ONNX (tf2onnx, opset {opset}) + onnxruntime",
                lambda: convert_onnx(export_dir, "sample", opset), feeds, refs,
                scratch / f"sample_{opset}.onnx"))
    rows.append(compiled_step(model, priors, refs, scratch / "compiled"))
    rows += noise_steps(model, priors, refs, scratch, args.opsets[0])
    return rows, naive_s


def section(args, rows, wall, naive_s):
    attention = ("without attention" if args.no_attention else
                 "attention after every gated block but the last, output projections randomised")
    errors = [f"- {row.number}: `{row.error_line()[:400]}`" for row in rows if row.error]
    lines = [
        f"## The `sample` signature through the converters ({'no attention' if args.no_attention else 'attention priors'})",
        "",
        f"`{command_line()}` ({wall:.0f} s wall, one process, `nice -n 19`, while other "
        f"jobs shared the cores). Tiny untrained VQ-VAE-2 at 32x32 (top 4x4, K = 16; bottom "
        f"8x8, K = 12), class-conditional priors, {attention}; exported with "
        f"`export_saved_model(..., sample_method=\"cached\")`. \"Codes = naive\": every level's "
        f"codes equal `sample_levels(..., method=\"naive\")` for labels [0, 9, 2, 2, 7] at "
        f"(seed 0, T 1.0) and (seed 123, T 0.5) (naive references: {naive_s:.1f} s). "
        f"Steps 5–6 patch `sampling.gumbel_noise` while tracing so the noise is an input "
        f"(see the script's docstring). {machine_line()}, tf2onnx {version('tf2onnx')}, "
        f"onnx {version('onnx')}, onnxruntime {version('onnxruntime')}, ai-edge-litert "
        f"{version('ai-edge-litert')}.",
        "",
        markdown_table(HEADER, [row.row() for row in rows]),
    ]
    if errors:
        lines += ["", "Errors, first line (400 characters at most):", "", *errors]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "scratch"
                                             / "sample_conversion"),
                        help="folder for the temporary files (a temp dir inside it)")
    parser.add_argument("--opsets", default="17", help="ONNX opsets for step 3 (comma list)")
    parser.add_argument("--no-attention", action="store_true", help="priors without attention")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--no-write", action="store_true", help="print only")
    global SCRATCH
    args = parser.parse_args(argv)
    args.opsets = [int(o) for o in args.opsets.split(",") if o.strip()]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = SCRATCH = Path(tempfile.mkdtemp(dir=out, prefix="run-"))
    print("tfvqvae from", tfvqvae.__file__, "; files in", scratch, flush=True)
    start = time.perf_counter()
    try:
        rows, naive_s = run_all(args, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    markdown = section(args, rows, time.perf_counter() - start, naive_s)
    print(markdown)
    if not args.no_write:
        write_section("sample_conversion" + ("_no_attention" if args.no_attention else ""),
                      markdown)


if __name__ == "__main__":
    main()
