"""Images and models: HAM10000 reading, the U-Net, the ResNet50 classifier and the triage pipeline.

Nothing in this package imports the bot, the database or Celery. Heavy frameworks
(TensorFlow, torch) are imported inside the modules that need them, never here.
"""
