"""Scoring: files of reviews in bulk through the SavedModel with Apache Beam's RunInference."""
