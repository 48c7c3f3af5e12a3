"""Load torch before TensorFlow, in one place.

With the pinned builds, `torch._dynamo` (which loads triton, as `torchvision.ops` and loading a torch
model do) segfaults when TensorFlow was imported first: both bring their own LLVM and the symbols
clash. Every process that uses both frameworks calls `load_torch_first()` before Keras or TensorFlow.
"""

from __future__ import annotations

import sys

from ml.errors import ModelUnavailableError


def load_torch_first() -> None:
    """Import torch, torch._dynamo and torchvision; refuse clearly if TensorFlow is already loaded."""
    if "torch._dynamo" not in sys.modules and "tensorflow" in sys.modules:
        raise ModelUnavailableError(
            "TensorFlow was imported before torch._dynamo, and loading the classifier would then crash the "
            "process; call ml.frameworks.load_torch_first() before importing keras/tensorflow, or run with "
            "KERAS_BACKEND=torch"
        )
    import torch._dynamo  # noqa: F401
    import torchvision  # noqa: F401
