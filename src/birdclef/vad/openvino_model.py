"""Silero VAD's sequence model compiled by OpenVINO, cut in two so that several files run together.

Model: the Silero VAD 6 "sequence" ONNX export shipped inside the `silero_vad`
package (`silero_vad_16k_sequence.onnx`), compiled by OpenVINO in float32
(kind "openvino", the default). The graph is split in two at load time, both
halves built from the shipped file's own operations and weights: the per-frame
encoder (STFT and convolutions), which runs on the frames of several files in
one call, and the LSTM with the output layer, which runs several files as one
batch. Its probabilities match the stock model's within 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from birdclef.vad.settings import (
    DEFAULT_BATCH_FILES,
    VAD_CONTEXT_SAMPLES,
    VAD_FRAME_SAMPLES,
    silero_model_path,
)


class OpenVinoSileroVad:
    """Silero VAD's shipped sequence model, compiled by OpenVINO, batching several files.

    The shipped graph maps frames `[n, 64 + 512]` (each frame with the last 64
    samples of the one before) through a per-frame encoder to `[1, n, 128]`,
    then an LSTM (batch 1) and a 1x1 convolution with a sigmoid. At load time
    it is cut into two compiled models that reuse its operations and weights:

    - encoder: frames -> features; frames from several files go in one call;
    - recurrent: the same LSTM, output convolution and sigmoid, rebuilt with a
      batch axis and per-file lengths so that files of similar length run as
      one batch (padding frames after a file's end do not change its outputs).

    Float32 is requested explicitly: OpenVINO defaults to bfloat16 on CPUs that
    have it, which moves the probabilities by up to ~3e-3.
    """

    def __init__(
        self,
        threads: int = 1,
        max_batch_files: int = DEFAULT_BATCH_FILES,
        encoder_frames: int = 4096,
        min_length_ratio: float = 0.6,
    ) -> None:
        self.threads = max(1, int(threads))
        self.max_batch_files = max(1, int(max_batch_files))
        self.encoder_frames = max(1, int(encoder_frames))
        self.min_length_ratio = float(min_length_ratio)

        core = ov.Core()
        encoder, head, hidden = _split_graph(core.read_model(str(silero_model_path("openvino"))))

        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
            # Pinning would put every single-threaded worker process on the same core.
            "ENABLE_CPU_PINNING": False,
        }
        self.hidden = hidden
        self._encoder = core.compile_model(encoder, "CPU", config).create_infer_request()
        self._recurrent = core.compile_model(head, "CPU", config).create_infer_request()

    # -- frames

    @staticmethod
    def frame_count(n_samples: int) -> int:
        """Frames of a 16 kHz signal of `n_samples` (the last one zero-padded)."""
        return -(-int(n_samples) // VAD_FRAME_SAMPLES)

    @staticmethod
    def frames(wave: np.ndarray, first: int, last: int) -> np.ndarray:
        """Model input for frames [first, last) of `wave`: `[last - first, 576]`.

        Each row is the last 64 samples of the previous frame (zeros before the
        first) and the frame's 512 samples (zeros past the end), as the
        streaming model sees them.
        """
        frame, context = VAD_FRAME_SAMPLES, VAD_CONTEXT_SAMPLES
        block = np.zeros((last - first, context + frame), dtype=np.float32)
        body = wave[first * frame : last * frame]
        full = body.size // frame
        block[:full, context:] = body[: full * frame].reshape(full, frame)
        if full < last - first:
            block[full, context : context + body.size - full * frame] = body[full * frame :]
        block[1:, :context] = block[:-1, -context:]
        if first > 0:
            block[0, :context] = wave[first * frame - context : first * frame]
        return block

    # -- inference

    def _encode(self, waves: Sequence[np.ndarray], counts: Sequence[int]) -> list[np.ndarray]:
        """Encoder features `[n_frames, hidden]` of each wave; several files per call."""
        features = [np.empty((n, self.hidden), dtype=np.float32) for n in counts]
        pending: list[tuple[int, int, int]] = []  # (wave, first, last)
        pending_frames = 0

        def flush() -> None:
            nonlocal pending, pending_frames
            if not pending:
                return
            blocks = [self.frames(waves[i], a, b) for i, a, b in pending]
            batch = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
            out = self._encoder.infer({0: batch}, share_inputs=True)[0].reshape(-1, self.hidden)
            row = 0
            for i, a, b in pending:
                features[i][a:b] = out[row : row + b - a]
                row += b - a
            pending, pending_frames = [], 0

        for i, n in enumerate(counts):
            for first in range(0, n, self.encoder_frames):
                last = min(n, first + self.encoder_frames)
                pending.append((i, first, last))
                pending_frames += last - first
                if pending_frames >= self.encoder_frames:
                    flush()
        flush()
        return features

    def _recur(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frame probabilities of files run as one LSTM batch (zero initial state)."""
        lengths = np.array([f.shape[0] for f in features], dtype=np.int32)
        batch = np.zeros((len(features), int(lengths.max()), self.hidden), dtype=np.float32)
        for row, feature in enumerate(features):
            batch[row, : feature.shape[0]] = feature
        state = np.zeros((len(features), 1, self.hidden), dtype=np.float32)
        out = self._recurrent.infer(
            {"features": batch, "h": state, "c": state, "lengths": lengths}, share_inputs=True
        )[0]
        return [out[row, :n].copy() for row, n in enumerate(lengths)]

    def batches(self, counts: Sequence[int]) -> list[list[int]]:
        """Indices grouped for the LSTM: similar lengths, at most `max_batch_files`.

        The LSTM's cost follows the longest file of a batch, so a file joins a
        batch only when it has at least `min_length_ratio` of its longest's frames.
        """
        order = sorted((i for i, n in enumerate(counts) if n > 0), key=lambda i: -counts[i])
        groups: list[list[int]] = []
        for i in order:
            if (
                groups
                and len(groups[-1]) < self.max_batch_files
                and counts[i] >= self.min_length_ratio * counts[groups[-1][0]]
            ):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def probabilities(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-frame speech probabilities of each 16 kHz wave (float32 arrays)."""
        waves = [np.ascontiguousarray(np.asarray(w, dtype=np.float32).reshape(-1)) for w in waves]
        counts = [self.frame_count(w.size) for w in waves]
        out = [np.zeros(0, dtype=np.float32) for _ in waves]
        for group in self.batches(counts):
            features = self._encode([waves[i] for i in group], [counts[i] for i in group])
            for i, probs in zip(group, self._recur(features), strict=True):
                out[i] = probs
        return out


def _split_graph(graph: ov.Model) -> tuple[ov.Model, ov.Model, int]:
    """The shipped graph as (encoder, recurrent head, LSTM hidden size); see `OpenVinoSileroVad`."""
    by_type: dict[str, list] = {}
    for op in graph.get_ops():
        by_type.setdefault(op.get_type_name(), []).append(op)
    if len(by_type.get("LSTMSequence", [])) != 1 or len(by_type.get("Sigmoid", [])) != 1:
        raise RuntimeError("unexpected Silero sequence graph: need one LSTM and one sigmoid")
    lstm = by_type["LSTMSequence"][0]
    frames_input = [p for p in graph.get_parameters() if p.get_friendly_name() == "input"]
    encoder = ov.Model([lstm.input_value(0)], frames_input, "silero_encoder")
    head, hidden = _recurrent_head(lstm, by_type["Sigmoid"][0])
    return encoder, head, hidden


def _recurrent_head(lstm, sigmoid) -> tuple[ov.Model, int]:
    """The LSTM, output convolution and sigmoid rebuilt with a batch axis and per-file lengths."""
    # Output head of the shipped graph: sigmoid(conv1x1(relu(lstm)) + bias).
    bias_add = sigmoid.input_value(0).get_node()
    conv = bias_add.input_value(0).get_node()
    bias = bias_add.input_value(1).get_node().input_value(0)  # the [1] constant
    attrs = lstm.get_attributes()
    hidden = int(attrs["hidden_size"])
    x = ops.parameter([-1, -1, hidden], np.float32, name="features")
    h0 = ops.parameter([-1, 1, hidden], np.float32, name="h")
    c0 = ops.parameter([-1, 1, hidden], np.float32, name="c")
    lengths = ops.parameter([-1], np.int32, name="lengths")
    recurrent = ops.lstm_sequence(
        x, h0, c0, lengths,
        lstm.input_value(4), lstm.input_value(5), lstm.input_value(6),
        hidden, attrs["direction"], attrs["activations"],
        attrs["activations_alpha"], attrs["activations_beta"], attrs["clip"],
    )  # fmt: skip
    y = ops.relu(ops.squeeze(recurrent.output(0), [1]))  # [batch, time, hidden]
    logits = ops.convolution(
        ops.transpose(y, [0, 2, 1]),
        conv.input_value(1),
        conv.get_attributes()["strides"],
        conv.get_attributes()["pads_begin"],
        conv.get_attributes()["pads_end"],
        conv.get_attributes()["dilations"],
    )
    probs = ops.squeeze(ops.sigmoid(ops.add(logits, ops.reshape(bias, [1, 1, 1], False))), [1])
    head = ov.Model([probs.output(0)], [x, h0, c0, lengths], "silero_recurrent")
    return head, hidden
