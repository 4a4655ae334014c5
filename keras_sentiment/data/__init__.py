"""Data: review files, TFDS, folders and memory read into labeled splits; training batches."""
