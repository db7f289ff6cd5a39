"""The included serving and batch-inference runtime (``python -m runtime serve|batch|bench``).

Only the engine that needs them imports torch or transformers; importing this package is cheap.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
