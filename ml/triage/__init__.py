"""A patient's photo to an answer: decode, quality gate, kind of photo, pipeline, measurements, tier, the result.

Importing this package loads nothing heavy: the bot and the console import its light modules (decode, red_flags,
lesion_change, policy), and only the pipeline's model stages bring in torch or Keras, inside functions.
"""
