"""Multi-layer perceptrons as plain tf.Variables, initialised from a seeded numpy generator, and the pooled critic."""

from __future__ import annotations

import copy

import numpy as np
import tensorflow as tf


class MLP:
    """ReLU hidden layers and a linear output, as openai/maddpg's mlp_model (Glorot-uniform weights, zero biases).

    Args:
      in_dim: input size. out_dim: output size. num_units: hidden width.
      rng: numpy generator for the initial weights. name: variable name prefix.
      hidden: number of hidden layers (the original's networks have 2).
    """

    def __init__(self, in_dim: int, out_dim: int, num_units: int, rng: np.random.Generator, name: str,
                 hidden: int = 2):
        self.name = name
        sizes = [in_dim] + [num_units] * hidden + [out_dim]
        self.layers: list[tuple[tf.Variable, tf.Variable]] = []
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
            self.layers.append((tf.Variable(W, name=f"{name}/w{k}"),
                                tf.Variable(np.zeros(fan_out, np.float32), name=f"{name}/b{k}")))

    def copy(self, rng: np.random.Generator, name: str) -> MLP:
        """A network of the same shape named `name`, holding this one's weights (a target network)."""
        twin = MLP(self.layers[0][0].shape[0], self.layers[-1][0].shape[1], self.layers[0][0].shape[1], rng, name,
                   hidden=len(self.layers) - 1)
        for dst, src in zip(twin.weights, self.weights, strict=True):
            dst.assign(src)
        return twin

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


class PooledCritic:
    """Critics whose input does not grow with the number of agents (a mean-pooling MAAC, arXiv 1810.02912).

    An encoder per kind of agent (the same observation size, action size and side) embeds each agent's
    observation and action, e_j = relu(W_k [o_j, a_j] + b_k); the embeddings are averaged within each kind, and
    agent i's head reads [e_i, pool_1, .., pool_K] -> one hidden layer -> Q_i. The encoder is the first hidden
    layer of the original's critic and the head the second, so Q_i has its depth; the head's input is
    num_units x (1 + K) for any number of agents. The encoders are shared by every head.

    Args:
      kinds: one hashable kind per agent (agents of one kind share an encoder and a pool).
      in_dims: observation plus action size per agent. head_names: agent index -> name, for the agents that
        have a head. num_units, rng: as MLP. name: prefix of the encoders' variables.
    """

    def __init__(self, kinds: list, in_dims: list[int], head_names: dict[int, str], num_units: int,
                 rng: np.random.Generator, name: str):
        unique = list(dict.fromkeys(kinds))  # in order of first appearance
        self.kind = [unique.index(k) for k in kinds]
        self.members = [[j for j, k in enumerate(self.kind) if k == kind] for kind in range(len(unique))]
        self.encoders = [MLP(in_dims[members[0]], num_units, num_units, rng, f"{name}/encoder{k}", hidden=0)
                         for k, members in enumerate(self.members)]
        self.heads = {i: MLP(num_units * (1 + len(unique)), 1, num_units, rng, f"{agent}/critic_head", hidden=1)
                      for i, agent in head_names.items()}

    def copy(self, rng: np.random.Generator, suffix: str) -> PooledCritic:
        """The same critics under names ending in `suffix`, holding these weights (the targets)."""
        twin = copy.copy(self)
        twin.encoders = [e.copy(rng, e.name + suffix) for e in self.encoders]
        twin.heads = {i: h.copy(rng, h.name + suffix) for i, h in self.heads.items()}
        return twin

    @property
    def weights(self) -> list[tf.Variable]:
        return [v for net in self.encoders + list(self.heads.values()) for v in net.weights]

    def embed(self, obs: list[tf.Tensor], act: list[tf.Tensor]) -> list[tf.Tensor]:
        """Every agent's embedding [..., num_units] from its observation and action."""
        return [self.embed_agent(j, o, a) for j, (o, a) in enumerate(zip(obs, act, strict=True))]

    def embed_agent(self, j: int, o: tf.Tensor, a: tf.Tensor) -> tf.Tensor:
        """Agent j's embedding [..., num_units]."""
        return tf.nn.relu(self.encoders[self.kind[j]](tf.concat([o, a], axis=-1)))

    def pool(self, e: list[tf.Tensor]) -> tf.Tensor:
        """The embeddings averaged within each kind, concatenated [..., K * num_units]."""
        return tf.concat([tf.add_n([e[j] for j in members]) / len(members) for members in self.members], axis=-1)

    def q(self, i: int, e_i: tf.Tensor, pool: tf.Tensor) -> tf.Tensor:
        """Agent i's Q [...] from its own embedding and the pools."""
        return self.heads[i](tf.concat([e_i, pool], axis=-1))[..., 0]
