"""Layer 1 (runtime): torch-free audio, log-mel, post-processing, inference, the teacher models,
submission, predict.

Imports only `birdclef.common` and numpy/pandas/soundfile/openvino (and, for a teacher,
the optional ai_edge_litert and onnxruntime); the Kaggle bundle copies it whole.
"""
