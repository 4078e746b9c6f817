"""Reconstruction scoring with a bundle's Keras model: batched, through one compiled function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamer import quiet_tf
from streamer.errors import BundleError

BATCH_ROWS = 256
# A long batch runs in blocks of this many base batches: each call of the model costs about
# a millisecond whatever its size, which at 256 windows is a third of the model's time.
BLOCKS = 4


class Scorer:
    """Scores scaled windows by the mean squared reconstruction error of their last step.

    The model always runs on batches of exactly ``batch_size`` windows (the last one padded),
    or of ``BLOCKS`` times that while that many are left: its float32 kernels may round
    differently for a batch of a few windows than for hundreds, so a window scored among a
    few in the streamer and among thousands in the trainer could otherwise differ in the
    last bits, enough to move it past a threshold or a rank. The two sizes share their
    kernels (a test holds them to identical results).
    """

    def __init__(self, model: Any, lookback: int, batch_size: int = BATCH_ROWS) -> None:
        tf = quiet_tf.tensorflow()  # TensorFlow only where a model runs

        self.model = model
        self.batch_size = batch_size
        shape, output = model.input_shape, model.output_shape
        if not isinstance(shape, tuple) or len(shape) != 3 or shape[2] is None or output != shape:
            raise BundleError(
                f"the model maps {shape} to {output}; an autoencoder takes windows shaped "
                "(batch, rows, features) and gives the same shape back"
            )
        steps, width = shape[1], shape[2]
        if steps is not None and steps != lookback:
            raise BundleError(f"the model takes windows of {steps} rows, not {lookback}")
        self.lookback, self.width = lookback, int(width)
        self._tensor = tf.constant
        self._traced: dict[int, Any] = {}
        self._function(batch_size)  # a model that cannot trace is refused here

    def _function(self, size: int) -> Any:
        """The model on batches of ``size`` windows, traced on first use. Calling the
        concrete function skips tf.function's per-call dispatch, which costs as much as the
        model itself on batches of a few hundred; the long blocks' function is traced only
        once a batch needs it."""
        traced = self._traced.get(size)
        if traced is None:
            tf = quiet_tf.tensorflow()
            spec = tf.TensorSpec(shape=(size, self.lookback, self.width), dtype=tf.float32)
            model = self.model
            traced = self._traced[size] = tf.function(
                lambda x: model(x, training=False)[:, -1, :], input_signature=[spec]
            ).get_concrete_function()
        return traced

    @classmethod
    def load(cls, model_path: Path, lookback: int, batch_size: int = BATCH_ROWS) -> Scorer:
        """Load a ``.keras`` model in safe mode (no code from the file is ever run)."""
        keras = quiet_tf.keras()

        try:
            model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        except Exception as exc:
            raise BundleError(f"{model_path}: the model does not load ({exc})") from exc
        try:
            return cls(model, lookback, batch_size=batch_size)
        except BundleError:
            raise
        except Exception as exc:  # a model that loads may still fail to trace on windows
            raise BundleError(f"{model_path}: the model cannot score windows ({exc})") from exc

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """The model's reconstruction of each window's last step, shaped (samples, features)."""
        if windows.ndim != 3 or windows.shape[1:] != (self.lookback, self.width):
            raise ValueError(
                f"windows of shape {windows.shape} do not fit the model's "
                f"(batch, {self.lookback}, {self.width})"
            )
        total = windows.shape[0]
        out = np.empty((total, self.width), dtype=np.float32)
        start, block = 0, self.batch_size * BLOCKS
        while start < total:
            size = block if total - start >= block else self.batch_size
            chunk = np.ascontiguousarray(windows[start : start + size], np.float32)
            rows = len(chunk)
            if rows < size:
                chunk = np.concatenate(
                    [chunk, np.zeros((size - rows, *chunk.shape[1:]), np.float32)]
                )
            out[start : start + rows] = self._function(size)(self._tensor(chunk)).numpy()[:rows]
            start += rows
        return out

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores, per-feature squared errors and reconstructions of each window's last step."""
        reconstruction = self.reconstruct(windows)
        errors = np.square(windows[:, -1, :] - reconstruction)
        return errors.mean(axis=1), errors, reconstruction
