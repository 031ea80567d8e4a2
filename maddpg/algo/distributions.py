"""Action distributions in TensorFlow, for the learner's updates (the numpy twins are in maddpg/acting/heads.py).

Sampling is differentiable with respect to the distribution parameters: Gumbel-softmax for (multi-)
categorical heads (arXiv 1611.01144, temperature 1 as openai/maddpg), the reparameterised normal for the
Gaussian, binary concrete for the Bernoulli (openai/maddpg's BernoulliPd.sample is a hard, gradient-free
threshold, which gives the actor no gradient: a departure, see algo/README.md).
"""

from __future__ import annotations

import tensorflow as tf

from maddpg.acting.heads import Head

_TINY = 1e-10


def _split(head: Head, x: tf.Tensor) -> list[tf.Tensor]:
    return tf.split(x, list(head.groups), axis=-1)


def mode(head: Head, params: tf.Tensor) -> tf.Tensor:
    """The most likely (or deterministic) action vectors [B, action_dim]."""
    if head.kind in ("soft_categorical", "soft_multi_categorical"):
        return tf.concat([tf.nn.softmax(g, axis=-1) for g in _split(head, params)], axis=-1)
    if head.kind == "gaussian":
        mean, _ = tf.split(params, 2, axis=-1)
        return tf.clip_by_value(mean, head.low, head.high)
    if head.kind == "bernoulli":
        return tf.cast(params > 0, tf.float32)
    return head.low + (head.high - head.low) * tf.sigmoid(params)


def sample(head: Head, params: tf.Tensor, gen: tf.random.Generator) -> tf.Tensor:
    """A differentiable sample of action vectors [B, action_dim] from flat parameters [B, param_dim]."""
    if head.kind in ("soft_categorical", "soft_multi_categorical"):
        u = gen.uniform(tf.shape(params), minval=_TINY, maxval=1.0)
        noisy = params - tf.math.log(-tf.math.log(u))
        return tf.concat([tf.nn.softmax(g, axis=-1) for g in _split(head, noisy)], axis=-1)
    if head.kind == "gaussian":
        mean, logstd = tf.split(params, 2, axis=-1)
        a = mean + tf.exp(logstd) * gen.normal(tf.shape(mean))
        return tf.clip_by_value(a, head.low, head.high)
    if head.kind == "bernoulli":
        u = gen.uniform(tf.shape(params), minval=_TINY, maxval=1.0 - 1e-7)
        return tf.sigmoid(params + tf.math.log(u) - tf.math.log1p(-u))
    return mode(head, params)
