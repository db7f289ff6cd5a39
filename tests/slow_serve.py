"""``python -m runtime serve`` with every decoding step slowed down, for the drain tests.

    python tests/slow_serve.py SECONDS_PER_STEP serve --model ... (the flags of runtime serve)

The tiny test model writes hundreds of tokens in well under a second, so no generation would
still be running when the test sends SIGTERM. This runs the real command line (runtime.cli:
the same server, signal handling and exit code) on the real engine and model, only with a pause
before each step of the batch, so that a generation of N tokens lasts about N x SECONDS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime.engine_transformers as engine_transformers  # noqa: E402
from runtime.cli import main  # noqa: E402

DELAY = float(sys.argv[1])


class SlowEngine(engine_transformers.TransformersEngine):
    def new_batch(self):  # type: ignore[no-untyped-def]
        batch = super().new_batch()
        step = batch.step

        def slow_step() -> list[int]:
            time.sleep(DELAY)
            return step()

        batch.step = slow_step  # type: ignore[method-assign]
        return batch


# The server builds its engine from this name when the model loads (runtime.server._default_engine).
engine_transformers.TransformersEngine = SlowEngine  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
