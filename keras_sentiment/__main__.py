"""`python -m keras_sentiment`: quiet TensorFlow's C++ logging, then run the CLI."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sentiment.cli import main  # noqa: E402  (after the logging variable)

sys.exit(main())
