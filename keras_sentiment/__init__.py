"""keras_sentiment: an IMDB LSTM sentiment classifier with Keras 3, from raw text to TF Serving.

Stages, in data-flow order: config, data, preprocessing, embeddings, model, training,
evaluation, export, prediction, cli.
"""

__version__ = "0.1.0"
