"""Grad-CAM explanations for the operator console (pytorch-grad-cam), with a flag when the map shows nothing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.classification.classifier import Classifier
from ml.classification.preprocess import fit_to_input
from skintriage.vocabulary import LABELS

# A normalised map whose peak is this low had no positive evidence at all (Grad-CAM's ReLU
# zeroed it, or the raw map was constant before min-max scaling).
EMPTY_PEAK = 1e-3
# Share of pixels above half the peak beyond which the map highlights "everything" and localises nothing.
DIFFUSE_SHARE = 0.85
OVERLAY_MAX_SIDE = 512


@dataclass(frozen=True)
class GradCamResult:
    """A heatmap overlay JPEG, the class it explains, and whether the map shows nothing useful."""

    jpeg: bytes
    label: str
    shows_nothing: bool
    reason: str | None
    hot_share: float


def judge_map(cam: np.ndarray) -> tuple[bool, str | None, float]:
    """Decide whether a [0, 1] Grad-CAM map localises anything; return (shows_nothing, reason, hot share)."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32))
    peak = float(cam.max()) if cam.size else 0.0
    if peak < EMPTY_PEAK:
        return True, "empty map: no region raised the score of this class", 0.0
    hot_share = float((cam >= 0.5 * peak).mean())
    if hot_share > DIFFUSE_SHARE:
        return True, f"diffuse map: {hot_share:.0%} of the image is highlighted, nothing is singled out", hot_share
    return False, None, hot_share


def explain(
    classifier: Classifier,
    image_rgb_uint8: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    label: str | None = None,
    jpeg_quality: int = 85,
) -> GradCamResult:
    """Grad-CAM of one photo for `label` (default: the predicted class) as an overlay JPEG on the classified view."""
    import cv2
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    view = classifier.prepare(image_rgb_uint8, mask)
    if label is None:
        label = LABELS[int(classifier.predict_proba([view])[0].argmax())]
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {list(LABELS)}")
    fitted = fit_to_input(view, classifier.input_size)
    x = classifier.normalize(fitted[None], classifier.device)
    model = classifier.model
    was_training = model.training
    model.eval()
    try:
        # Grad-CAM needs gradients through the last residual stage; fp32 keeps the map stable.
        with torch.enable_grad(), GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
            grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(LABELS.index(label))])[0]
    finally:
        model.train(was_training)
    shows_nothing, reason, hot_share = judge_map(grayscale)

    h, w = classifier.input_size
    # Show the classified view at its own detail (up to OVERLAY_MAX_SIDE), in the input's aspect ratio.
    long_side = max(max(h, w), min(OVERLAY_MAX_SIDE, max(view.shape[:2])))
    out_h, out_w = round(h * long_side / max(h, w)), round(w * long_side / max(h, w))
    background = fit_to_input(view, (out_h, out_w)).astype(np.float32) / 255.0
    heat = cv2.resize(grayscale.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    overlay = show_cam_on_image(background, np.clip(heat, 0, 1), use_rgb=True, image_weight=0.6)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the Grad-CAM overlay as JPEG")
    return GradCamResult(
        jpeg=buf.tobytes(), label=label, shows_nothing=shows_nothing, reason=reason, hot_share=hot_share
    )
