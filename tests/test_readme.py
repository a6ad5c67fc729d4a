"""The README's code runs as written.

Every ```python block of README.md is run unmodified, each in a fresh
interpreter in an empty folder, offline. The gRPC client block talks to a
PredictionService on localhost:8500 that this test serves from a real
SavedModel export (`tfvqvae.export.export_run`), so it checks the export's
signature names, inputs and outputs the way a TF Serving client sees them.

Every ``tfvqvae ...`` line of the ```bash blocks is parsed by the real
command-line parser (nothing is run), so an option the README names exists.
"""

import os
import re
import shlex
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TIMEOUT_S = 900
GRPC_PORT = 8500
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#+ (.*)$", re.MULTILINE)


def _blocks(language):
    """``(section heading, code)`` of each block in ``language``, in README order."""
    text = README.read_text()
    found, heading, end = [], "top", 0
    for match in BLOCK.finditer(text):
        heading = ([heading] + HEADING.findall(text[end : match.start()]))[-1]
        end = match.end()
        if match.group(1) == language:
            found.append((heading, match.group(2)))
    return found


def _ids(blocks):
    return [re.sub(r"\W+", "-", heading).strip("-").lower() for heading, _ in blocks]


PYTHON_BLOCKS = _blocks("python")


def test_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 4


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """A PredictionService on localhost:8500 serving a real export named "quickstart"."""
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis")
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tfvqvae.export import export_run
    from tfvqvae.training import TrainConfig
    from tfvqvae.training import train

    del apis
    root = tmp_path_factory.mktemp("serving")
    run = root / "quickstart"
    train(TrainConfig(
        out=str(run), dataset="digits", image_size=16, model="vqvae2", epochs=1,
        max_train_examples=64, batch_size=32, num_embeddings=16, embedding_dim=4,
        hidden_channels=8, residual_channels=4, num_residual_layers=1, grid_pairs=2,
    ), verbose=0)
    result = export_run(run, root / "export", formats="savedmodel", name="quickstart")
    loaded = tf.saved_model.load(str(result.artifacts["savedmodel"]))

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC's name)
            if request.model_spec.name != "quickstart":
                context.abort(grpc.StatusCode.NOT_FOUND, request.model_spec.name)
            signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for key, value in signature(**inputs).items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    if server.add_insecure_port(f"localhost:{GRPC_PORT}") == 0:
        pytest.skip(f"port {GRPC_PORT} is taken")
    server.start()
    yield
    server.stop(grace=None)


# Blocks that train for tens of seconds run with the slow tests (CI runs both); the
# default suite runs the quantiser-layers block (about 10 s) and parses every command.
SLOW_SECTIONS = ("Use it from Python",
                 "VQ-VAE-2 and priors from Python",
                 "Compressing images: `tfvqvae compress`",
                 "Distributed and mixed-precision training",
                 "Export")  # the gRPC client: its `serving` fixture trains and exports a run


@pytest.mark.parametrize("code", [
    pytest.param(code, marks=[pytest.mark.slow] if heading in SLOW_SECTIONS else [])
    for heading, code in PYTHON_BLOCKS
], ids=_ids(PYTHON_BLOCKS))
def test_readme_python_block_runs(code, tmp_path, request):
    if "localhost:8500" in code:
        request.getfixturevalue("serving")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"README block failed:\n{code}\n{done.stderr[-4000:]}"


def _commands():
    """Every ``tfvqvae ...`` command line of the bash blocks, continuation lines joined."""
    commands = []
    for _, code in _blocks("bash"):
        text = code.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if "tfvqvae " not in line:
                continue
            words = shlex.split(line[line.index("tfvqvae "):].split("&&")[0])
            # "[--model vqvae2]" marks optional flags: check them too.
            commands.append([w.strip("[]") for w in words if w.strip("[]")][1:])
    return commands


COMMANDS = _commands()


def test_readme_has_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c)[:50] for c in COMMANDS])
def test_readme_command_parses(words):
    from tfvqvae_cli.parser import build_parser

    parser = build_parser()
    if words[-1] == "--help":
        words = words[:-1]
    if "COMMAND" in words:  # `tfvqvae COMMAND --help`
        return
    parser.parse_args(words)
