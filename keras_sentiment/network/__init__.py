"""Network: the LSTM's math, its training and serving kernels, the model and the n-gram branch."""
