"""Serving: the SavedModel TF Serving runs (serve and explain), predictors and the REST client."""
