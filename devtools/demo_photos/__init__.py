"""Sample photos the demo sends as a simulated patient (see README.md here for their licence)."""
