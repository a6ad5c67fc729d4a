"""Writes one bench script's section of ``bench/RESULTS.md``, atomically.

Each script owns the text between ``<!-- begin NAME -->`` and
``<!-- end NAME -->``; rerunning it replaces that section and leaves the rest
of the file alone. A section not yet in the file is appended.
"""

import os
import platform
import re
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line():
    """One line naming the machine and the versions that matter."""
    import keras
    import numpy as np
    import tensorflow as tf

    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, NumPy {np.__version__}"
    )


def command_line():
    """The command that ran this script, as a user would type it."""
    script = os.path.relpath(sys.argv[0], RESULTS.parent.parent)
    return " ".join(["python", script, *sys.argv[1:]])


def write_section(name, markdown, path=RESULTS):
    """Replaces (or appends) the section ``name`` of RESULTS.md with ``markdown``."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def markdown_table(header, rows):
    """A GitHub markdown table; numbers right-aligned."""
    def align(column):
        values = [row[column] for row in rows]
        return "---:" if values and all(isinstance(v, (int, float)) for v in values) else "---"

    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(align(i) for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
