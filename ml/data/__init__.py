"""The training data sets: HAM10000 (reader, lesion-grouped splits), PAD-UFES-20 phone photos, the folder check."""
