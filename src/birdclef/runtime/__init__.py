"""Layer 1 (runtime): torch-free audio, log-mel, post-processing, inference, submission, predict.

Imports only `birdclef.common` and numpy/pandas/soundfile/openvino; the Kaggle bundle copies it whole.
"""
