"""The triage pipeline, loaded once per worker process on first use (never at import).

CUDA cannot be re-initialised in a forked child, and loading the U-Net and ResNet50 takes seconds,
so the first job of a process loads them and every later job reuses them. A failed load is not
cached: the next job tries again (e.g. after an operator copied the model files in).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from skintriage.exceptions import InfrastructureError
from skintriage.settings import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pipeline: Any = None
_pipeline_key: tuple[str, bool] | None = None
last_error: str | None = None  # why the last load failed, for /healthz


def policy_from_settings(settings: Settings) -> Any:
    """The tier policy knobs the settings carry (UNCERTAIN_MARGIN, MIN_CONFIDENCE)."""
    from ml.triage.policy import PolicyConfig

    return PolicyConfig(uncertain_margin=settings.uncertain_margin, min_confidence=settings.min_confidence)


def get_pipeline(settings: Settings) -> Any:
    """The loaded pipeline.

    Raises ml.errors.ModelUnavailableError when MODEL_DIR has no trusted model, and InfrastructureError when
    trusted models fail to load on this worker (unreadable file, out of memory, a crash in torch or TensorFlow).
    """
    global _pipeline, _pipeline_key, last_error
    key = (str(settings.model_dir.resolve()), settings.allow_demo_models)
    with _lock:
        if _pipeline is not None and _pipeline_key == key:
            return _pipeline
        from ml.errors import ModelUnavailableError
        from ml.frameworks import load_torch_first

        started = time.monotonic()
        try:
            load_torch_first()  # before ml.triage.pipeline brings Keras in
            from ml.triage.pipeline import Pipeline

            pipeline = Pipeline.from_model_dir(
                settings.model_dir,
                allow_demo=settings.allow_demo_models,
                policy=policy_from_settings(settings),
                max_pixels=settings.max_image_pixels,
                explain=settings.gradcam,
            )
        except ModelUnavailableError as exc:
            last_error = str(exc)
            raise
        except Exception as exc:
            last_error = f"load failed: {type(exc).__name__}: {exc}"
            raise InfrastructureError(
                f"the models in {settings.model_dir} failed to load on this worker ({type(exc).__name__}: {exc}); "
                "check the worker's memory, GPU and libraries, or restart it"
            ) from exc
        _pipeline, _pipeline_key, last_error = pipeline, key, None
        log.info(
            "pipeline loaded from %s in %.1f s: %s",
            settings.model_dir,
            time.monotonic() - started,
            getattr(pipeline, "versions", {}),
        )
        return pipeline


def loaded() -> bool:
    """Whether this process has a pipeline loaded."""
    return _pipeline is not None


def reset() -> None:
    """Forget the loaded pipeline (tests; a worker never needs it)."""
    global _pipeline, _pipeline_key, last_error
    with _lock:
        _pipeline, _pipeline_key, last_error = None, None, None
