"""Segmentation losses in keras.ops, so they run on every Keras backend."""

from __future__ import annotations

import keras
from keras import ops


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice per image (averaged over the batch); y_* are (N, H, W, 1) in [0, 1]."""
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - ops.mean((2.0 * intersection + smooth) / (total + smooth))


@keras.saving.register_keras_serializable(package="skintriage")
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy plus soft Dice: BCE gives smooth pixel gradients, Dice fights class imbalance."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, name: str = "bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight

    def call(self, y_true, y_pred):
        """Loss of one batch (a scalar; Keras' reduction over a scalar is a no-op)."""
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        return self.bce_weight * bce + self.dice_weight * soft_dice_loss(y_true, y_pred)

    def get_config(self):
        """Serializable configuration."""
        return {**super().get_config(), "bce_weight": self.bce_weight, "dice_weight": self.dice_weight}
