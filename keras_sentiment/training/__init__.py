"""Training: Keras fit with early stopping, pretraining, and resumable run folders."""
