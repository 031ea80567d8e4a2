"""MADDPG in TensorFlow: distributions, networks, the learner (the fused update).

Importing this package imports TensorFlow without the notices its C++ runtime prints while loading (see
`import_tensorflow_quietly`); acting needs none of it (`maddpg.acting` is numpy only).
"""

import os
import re
import sys
import tempfile

# What TensorFlow's C++ runtime prints while it loads, whatever TF_CPP_MIN_LOG_LEVEL says: since TF 2.18 these
# lines are logged before absl's logging is initialised, straight to file descriptor 2.
_TF_STARTUP_LINES = re.compile("|".join(re.escape(text) for text in (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "Could not find cuda drivers on your machine",
    "TF-TRT Warning: Could not find TensorRT",
)))


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow without the notices its C++ runtime prints while loading (oneDNN, CPU features, absl).

    File descriptor 2 goes to a temporary file during the import; every line that is not one of those notices
    is written back to stderr, so a real error still shows. Later imports of TensorFlow find it loaded.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING lines logged after start-up
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _TF_STARTUP_LINES.search(line)))


import_tensorflow_quietly()
