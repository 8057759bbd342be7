"""TensorFlow's own log lines, kept off a command-line user's terminal unless ``--verbose``.

TensorFlow's C++ side logs straight to file descriptor 2, beneath Python's ``sys.stderr``:
"Could not find cuda drivers", "failed call to cuInit: … UNKNOWN ERROR (303)", CPU-feature
and oneDNN notices. Neither Python's warning filters nor ``TF_CPP_MIN_LOG_LEVEL`` remove them
all (absl prints its pre-initialisation lines regardless). So while a command runs, Python's
``sys.stderr`` writes to the terminal directly and descriptor 2 goes through a pipe whose
reader passes on every line except those.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# absl/glog's line prefix ("I0000 00:00:1796290941.850027   13738 cudart_stub.cc:31] "), the
# line absl prints before it is set up, and the second line of TensorFlow's CPU-feature notice.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+ +\d+ [\w.\-/]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)
DRAIN_S = 2.0  # how long to wait for the last lines once the command is done


def is_native_log(line: bytes) -> bool:
    """Whether ``line`` (bytes, as written to descriptor 2) is one of TensorFlow's C++ logs."""
    return NATIVE_LINE.match(line) is not None


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Within the block, TensorFlow's C++ log lines do not reach the terminal; all else does."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    sys.stderr = open(terminal, "w", buffering=1, encoding=python_stderr.encoding,  # noqa: SIM115
                      errors="backslashreplace", closefd=False)
    reader = threading.Thread(target=_pass_on, args=(read_end, terminal), daemon=True,
                              name="native-logs")
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)  # closes the pipe's last write end here: the reader sees its end
        reader.join(DRAIN_S)
        if not reader.is_alive():  # else a child still holds the pipe; the reader needs it
            os.close(terminal)


def _pass_on(read_end: int, terminal: int) -> None:
    """Copy the pipe to the terminal line by line, leaving out TensorFlow's log lines."""
    with open(read_end, "rb") as pipe:
        for line in pipe:
            if not is_native_log(line):
                os.write(terminal, line)
