"""The lesion outline: the Keras U-Net, its presets, losses and metrics, the Otsu baseline, training and evaluation."""
