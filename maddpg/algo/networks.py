"""Multi-layer perceptrons as plain tf.Variables, initialised from a seeded numpy generator."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class MLP:
    """ReLU hidden layers and a linear output, as openai/maddpg's mlp_model (Glorot-uniform weights, zero biases).

    Args:
      in_dim: input size. out_dim: output size. num_units: hidden width (2 hidden layers).
      rng: numpy generator for the initial weights. name: variable name prefix.
    """

    def __init__(self, in_dim: int, out_dim: int, num_units: int, rng: np.random.Generator, name: str):
        self.name = name
        sizes = [in_dim, num_units, num_units, out_dim]
        self.layers: list[tuple[tf.Variable, tf.Variable]] = []
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
            self.layers.append((tf.Variable(W, name=f"{name}/w{k}"),
                                tf.Variable(np.zeros(fan_out, np.float32), name=f"{name}/b{k}")))

    @property
    def weights(self) -> list[tf.Variable]:
        return [v for layer in self.layers for v in layer]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        for W, b in self.layers[:-1]:
            x = tf.nn.relu(tf.matmul(x, W) + b)
        W, b = self.layers[-1]
        return tf.matmul(x, W) + b

    def numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """A numpy copy for `maddpg.acting.policy.mlp_forward`."""
        return [(W.numpy(), b.numpy()) for W, b in self.layers]
