"""Text: raw strings -> tokens -> ids (one in-graph table), and word vectors for the ids."""
