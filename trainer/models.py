"""The autoencoders of the reference method, and a PCA baseline as a linear autoencoder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from streamer import quiet_tf

log = logging.getLogger(__name__)

MODEL_KINDS = ("lstm", "dense", "pca")
DEFAULT_UNITS = {"lstm": (5, 16, 1), "dense": (32, 16, 16), "pca": ()}
DEFAULT_LEARNING_RATE = {"lstm": 1e-4, "dense": 1e-3, "pca": 0.0}
DEFAULT_BATCH = {"lstm": 64, "dense": 128, "pca": 0}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and training settings; the articles' values are the defaults."""

    kind: str = "lstm"
    units: tuple[int, ...] | None = None
    epochs: int = 200
    batch_size: int | None = None
    learning_rate: float | None = None
    patience: int = 10
    min_delta: float = 1e-4
    l1: float = 1e-7
    pca_variance: float = 0.9
    min_epochs: int = 0  # early stopping may not end the fit before this epoch
    plateau_patience: int = 0  # halve the step after this many flat epochs (0: never)

    def resolved(self) -> ModelConfig:
        """This config with the kind's defaults filled in."""
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r} is not one of {MODEL_KINDS}")
        return ModelConfig(
            kind=self.kind,
            units=self.units if self.units is not None else DEFAULT_UNITS[self.kind],
            epochs=self.epochs,
            batch_size=self.batch_size or DEFAULT_BATCH[self.kind],
            learning_rate=self.learning_rate or DEFAULT_LEARNING_RATE[self.kind],
            patience=self.patience,
            min_delta=self.min_delta,
            l1=self.l1,
            pca_variance=self.pca_variance,
            min_epochs=self.min_epochs,
            plateau_patience=self.plateau_patience,
        )


def build_lstm(lookback: int, width: int, units: Sequence[int]) -> Any:
    """LSTM encoder to ``units[-1]``, repeated over time, decoder ``units[:-1]``, dense out."""
    keras = quiet_tf.keras()

    inputs = keras.Input(shape=(lookback, width))
    x = inputs
    for i, n in enumerate(units):
        x = keras.layers.LSTM(n, activation="relu", return_sequences=i < len(units) - 1)(x)
    x = keras.layers.RepeatVector(lookback)(x)
    for n in list(units[:-1]) or [units[-1]]:
        x = keras.layers.LSTM(n, activation="relu", return_sequences=True)(x)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(width))(x)
    return keras.Model(inputs, outputs, name="lstm_autoencoder")


def build_dense(width: int, units: Sequence[int], l1: float) -> Any:
    """Dense autoencoder applied to each row on its own; sparse first layer as in the article."""
    keras = quiet_tf.keras()

    inputs = keras.Input(shape=(None, width))
    x = keras.layers.Dense(
        units[0], activation="tanh", activity_regularizer=keras.regularizers.L1(l1)
    )(inputs)
    for i, n in enumerate(units[1:]):
        x = keras.layers.Dense(n, activation="relu" if i % 2 == 0 else "tanh")(x)
    outputs = keras.layers.Dense(width)(x)
    return keras.Model(inputs, outputs, name="dense_autoencoder")


def build_pca(rows: np.ndarray, variance: float) -> Any:
    """PCA reconstruction as a linear Keras autoencoder, so it is scored like the others."""
    keras = quiet_tf.keras()

    mean = rows.mean(axis=0)
    _, sing, vt = np.linalg.svd(rows - mean, full_matrices=False)
    explained = np.cumsum(sing**2) / np.sum(sing**2)
    k = int(np.searchsorted(explained, variance) + 1)
    comps = vt[:k].T.astype(np.float32)
    width = rows.shape[1]
    inputs = keras.Input(shape=(None, width))
    enc = keras.layers.Dense(k, name="project")
    dec = keras.layers.Dense(width, name="reconstruct")
    model = keras.Model(inputs, dec(enc(inputs)), name="pca_autoencoder")
    enc.set_weights([comps, (-mean @ comps).astype(np.float32)])
    dec.set_weights([comps.T.copy(), mean.astype(np.float32)])
    log.info("PCA keeps %d of %d components (%.0f%% of variance)", k, width, variance * 100)
    return model


class _EpochBar:
    """A progress bar over epochs showing the losses (a Keras callback)."""

    def __init__(self, epochs: int) -> None:
        keras: Any = quiet_tf.keras()
        bar = tqdm(total=epochs, desc="training", unit="epoch", leave=True)

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                logs = logs or {}
                bar.set_postfix(
                    loss=f"{logs.get('loss', 0):.4f}", val=f"{logs.get('val_loss', 0):.4f}"
                )
                bar.update(1)

            def on_train_end(self, logs: dict[str, float] | None = None) -> None:
                bar.close()

        self.callback = Callback()


def _schedule(config: ModelConfig) -> list[Any]:
    """Early stopping on the validation loss, after ``min_epochs``, and the optional plateau
    schedule that halves the step when the validation loss stops falling."""
    keras = quiet_tf.keras()

    stop = {"start_from_epoch": config.min_epochs} if config.min_epochs else {}
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=config.patience,
            min_delta=config.min_delta,
            restore_best_weights=True,
            **stop,
        )
    ]
    if config.plateau_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=0.5,
                patience=config.plateau_patience,
                min_delta=config.min_delta,
                min_lr=1e-5,
            )
        )
    return callbacks


def fit_model(
    config: ModelConfig,
    train: np.ndarray,
    val: np.ndarray,
    seed: int,
    progress: bool = True,
) -> tuple[Any, dict[str, list[float]]]:
    """Build and train (or, for PCA, fit) a model on scaled normal windows; returns its history."""
    keras = quiet_tf.keras()

    config = config.resolved()
    keras.utils.set_random_seed(seed)
    lookback, width = train.shape[1], train.shape[2]
    units = tuple(config.units or ())
    if config.kind == "pca":
        model = build_pca(train[:, -1, :], config.pca_variance)
        return model, {}
    if config.kind == "dense":
        # Row models see each row once: the window's last step.
        train, val = train[:, -1:, :], val[:, -1:, :]
        model = build_dense(width, units, config.l1)
    else:
        model = build_lstm(lookback, width, units)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    callbacks = _schedule(config)
    if progress:
        callbacks.append(_EpochBar(config.epochs).callback)
    history = model.fit(
        train,
        train,
        validation_data=(val, val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    return model, {k: [float(x) for x in v] for k, v in history.history.items()}
