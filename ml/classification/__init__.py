"""The lesion classifier: the network, its presets and lesion crop, calibration, metrics, Grad-CAM, train, evaluate."""
