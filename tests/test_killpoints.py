"""`tfvqvae.killpoints`: the named point, and its N-th hit, kill the process; nothing else does."""

import os
import signal
import subprocess
import sys

import pytest

from tfvqvae import killpoints

# The module alone, loaded from its file: no TensorFlow import, so each run is quick.
SCRIPT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("killpoints", {killpoints.__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
killpoint = module.killpoint
for hit in range(1, 4):
    killpoint("checkpoint:staged")
    print(hit, flush=True)
killpoint("other")
print("done", flush=True)
"""


def run(spec):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(killpoints.ENV, None)
    if spec is not None:
        env[killpoints.ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("spec, printed, killed", [
    (None, ["1", "2", "3", "done"], False),
    ("checkpoint:staged", [], True),          # a name holding a colon, first hit
    ("checkpoint:staged:3", ["1", "2"], True),  # its third hit
    ("checkpoint", ["1", "2", "3", "done"], False),  # a prefix is another name
    ("other", ["1", "2", "3"], True),
])
def test_kill_at_named_point_and_hit(spec, printed, killed):
    result = run(spec)
    assert result.stdout.split() == printed
    assert (result.returncode == -signal.SIGKILL) == killed, result.stderr[-2000:]
    if not killed:
        assert result.returncode == 0


def test_bad_count_is_refused(monkeypatch):
    monkeypatch.setenv(killpoints.ENV, "checkpoint:staged:0")
    with pytest.raises(ValueError, match="positive integer. Received: 'checkpoint:staged:0'"):
        killpoints.killpoint("checkpoint:staged")
