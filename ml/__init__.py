"""Images and models: HAM10000 reading, the U-Net, the ResNet50 classifier and the triage pipeline.

    ml/data/            the training data sets: HAM10000 (splits), PAD-UFES-20, `skintriage data check`
    ml/segmentation/    the U-Net: presets, losses, metrics, Otsu baseline, train, evaluate
    ml/classification/  the classifier: presets, lesion crop, calibration, metrics, Grad-CAM, train, evaluate
    ml/triage/          a patient's photo to an answer: decode, quality gate, kind of photo, pipeline,
                        measurements, tier policy, the patient's answers, result, `skintriage triage`
    labels, errors, frameworks, modelcard, ship_models: shared by all of them

Nothing in this package imports the bot, the database or Celery. Heavy frameworks
(TensorFlow, torch) are imported inside the modules that need them, never here.
"""
