"""Named points where a test can kill the running process, deterministically.

Fault-tolerance tests need to kill a command at an exact moment (between two
renames, after the first checkpoint's temporary file is written, ...), not
after a sleep that a busy machine stretches. The code marks such moments with
`killpoint`; a test sets the environment variable ``TFVQVAE_KILL_AT`` in the
child process it starts, and the child SIGKILLs itself there: no cleanup,
no ``finally`` blocks, exactly what an out-of-memory kill or a pre-empted VM
does.

``TFVQVAE_KILL_AT`` holds ``NAME`` (the first time ``NAME`` is reached) or
``NAME:N`` (the N-th time, counting from 1); names may hold colons
(``checkpoint:staged:2`` is the second hit of ``checkpoint:staged``). Unset — always, outside tests —
`killpoint` only looks up one environment variable.
"""

import os
import signal

ENV = "TFVQVAE_KILL_AT"

_hits = {}


def _target():
    spec = os.environ.get(ENV)
    if not spec:
        return None, 0
    name, separator, count = spec.rpartition(":")
    if not separator or not count.isdigit():  # names hold colons: "checkpoint:staged"
        return spec, 1
    if int(count) < 1:
        raise ValueError(f"{ENV}: N must be a positive integer. Received: {spec!r}")
    return name, int(count)


def killpoint(name):
    """SIGKILLs this process if ``TFVQVAE_KILL_AT`` names this point (and this hit).

    Args:
        name: the point's name, e.g. ``"export:between-renames"``.
    """
    target, count = _target()
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
