"""The MADDPG learner: one compiled update of every agent's critic, actor and targets (arXiv 1706.02275).

Follows openai/maddpg's maddpg.py: for agent i, the critic regresses on
  y_i = r_i + gamma * (1 - done_i) * Q'_i(o'_1..N, a'_1..N),  a'_j a sample of target actor j,
the actor ascends Q_i(o_1..N, a_1.., a_i ~ pi_i(o_i), .., a_N) with a 1e-3 * mean(logits^2) regulariser,
gradients are clipped per variable by norm, Adam steps each network, then targets move by Polyak
averaging. Agents are updated in order inside one tf.function, so agent i's target actions use the target
actors already moved for agents < i, exactly as the original's sequential loop. A `ddpg` agent's critic sees
only its own observation and action.

With `shared_batch` every agent learns from the same batch and the target actions are sampled once per update,
from the targets as they were before it (a departure: N target-actor passes instead of N^2, see algo/README.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from maddpg.algo import distributions as D
from maddpg.acting.heads import Head
from maddpg.algo.networks import MLP
from maddpg.envs.spaces import EnvSpec


def configure_threads(threads: int) -> None:
    """Pins TensorFlow's thread pools (call before any TensorFlow op; on 2 cores pools fight)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started: keep what it has
        pass


class Adam:
    """Adam as TF1's AdamOptimizer (beta1 0.9, beta2 0.999, epsilon 1e-8), with per-variable norm clipping."""

    def __init__(self, variables: list[tf.Variable], lr: float, clip: float, name: str):
        self._vars = variables
        self._lr, self._clip = lr, clip
        self.m = [tf.Variable(tf.zeros_like(v), name=f"{name}/m{k}") for k, v in enumerate(variables)]
        self.v = [tf.Variable(tf.zeros_like(v), name=f"{name}/v{k}") for k, v in enumerate(variables)]

    def apply(self, grads: list[tf.Tensor], t: tf.Tensor) -> None:
        lr_t = self._lr * tf.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
        for var, g, m, v in zip(self._vars, grads, self.m, self.v, strict=True):
            g = tf.clip_by_norm(g, self._clip)
            m.assign(0.9 * m + 0.1 * g)
            v.assign(0.999 * v + 0.001 * tf.square(g))
            var.assign_sub(lr_t * m / (tf.sqrt(v) + 1e-8))


class MADDPGLearner:
    """Owns every agent's actor, critic, target networks and optimizers.

    Args:
      env_spec: the agents. heads: one action head per agent. policies: "maddpg" or "ddpg" per agent.
      num_units, lr, gamma, tau, grad_norm_clip, actor_reg: as in the run spec.
      seed: seeds the initial weights and the sampling inside updates.
      jit: compile the update with XLA (fastest on CPU).
      shared_batch: `step` takes one batch for all agents (fields [B, dim]) instead of one per agent.
    """

    def __init__(self, env_spec: EnvSpec, heads: list[Head], policies: list[str], *, num_units: int = 64,
                 lr: float = 1e-2, gamma: float = 0.95, tau: float = 0.01, grad_norm_clip: float = 0.5,
                 actor_reg: float = 1e-3, seed: int = 0, jit: bool = True, shared_batch: bool = False):
        self.heads, self.policies, self.shared_batch = heads, policies, shared_batch
        self._gamma, self._tau, self._reg = gamma, tau, actor_reg
        obs_dims = env_spec.obs_dims
        act_dims = [h.action_dim for h in heads]
        rng = np.random.default_rng(seed)
        self.actors, self.critics = [], []
        for i, agent in enumerate(env_spec.agents):
            critic_in = sum(obs_dims) + sum(act_dims) if policies[i] == "maddpg" else obs_dims[i] + act_dims[i]
            self.actors.append(MLP(obs_dims[i], heads[i].param_dim, num_units, rng, f"{agent.name}/actor"))
            self.critics.append(MLP(critic_in, 1, num_units, rng, f"{agent.name}/critic"))
        # Targets start as copies (openai/maddpg initialised them independently; see algo/README.md).
        self.target_actors = [self._copy(net, rng) for net in self.actors]
        self.target_critics = [self._copy(net, rng) for net in self.critics]
        self._actor_opt = [Adam(a.weights, lr, grad_norm_clip, f"{a.name}/adam") for a in self.actors]
        self._critic_opt = [Adam(c.weights, lr, grad_norm_clip, f"{c.name}/adam") for c in self.critics]
        self.step_count = tf.Variable(0, dtype=tf.int64, name="updates")
        self.gen = tf.random.Generator.from_seed(seed + 1)
        self._update = tf.function(self._update_all, jit_compile=jit, reduce_retracing=True)

    @staticmethod
    def _copy(net: MLP, rng: np.random.Generator) -> MLP:
        twin = MLP(net.layers[0][0].shape[0], net.layers[-1][0].shape[1], net.layers[0][0].shape[1], rng,
                   net.name + "_target")
        for dst, src in zip(twin.weights, net.weights, strict=True):
            dst.assign(src)
        return twin

    def _critic_input(self, i: int, obs: list[tf.Tensor], act: list[tf.Tensor]) -> tf.Tensor:
        if self.policies[i] == "maddpg":
            return tf.concat(obs + act, axis=-1)  # [B, sum(obs) + sum(act)]
        return tf.concat([obs[i], act[i]], axis=-1)

    def _target_actions(self, o_t: list[tf.Tensor]) -> list[tf.Tensor]:
        return [D.sample(h, net(o), self.gen) for h, net, o in zip(self.heads, self.target_actors, o_t)]

    def _update_all(self, obs, act, rew, next_obs, done):
        """obs/act/next_obs: per agent j, [N, B, dim_j] (slice i = the batch sampled for agent i), or [B, dim_j]
        with `shared_batch`; rew/done: [N, B] (agent i's own reward and done on its batch)."""
        self.step_count.assign_add(1)
        t = tf.cast(self.step_count, tf.float32)
        n = len(self.actors)
        if self.shared_batch:
            a_t_shared = self._target_actions(next_obs)
        q_losses, p_losses, q_means = [], [], []
        for i in range(n):
            if self.shared_batch:
                o_tm1, a_tm1, o_t, a_t = obs, act, next_obs, a_t_shared
            else:
                o_tm1, a_tm1, o_t = [x[i] for x in obs], [x[i] for x in act], [x[i] for x in next_obs]
                a_t = self._target_actions(o_t)
            q_t = self.target_critics[i](self._critic_input(i, o_t, a_t))[:, 0]  # [B]
            y = tf.stop_gradient(rew[i] + self._gamma * (1.0 - done[i]) * q_t)

            critic = self.critics[i]
            with tf.GradientTape() as tape:
                q_tm1 = critic(self._critic_input(i, o_tm1, a_tm1))[:, 0]
                q_loss = tf.reduce_mean(tf.square(q_tm1 - y))
            self._critic_opt[i].apply(tape.gradient(q_loss, critic.weights), t)

            actor = self.actors[i]
            with tf.GradientTape() as tape:
                logits = actor(o_tm1[i])
                a_pi = list(a_tm1)
                a_pi[i] = D.sample(self.heads[i], logits, self.gen)
                q_pi = critic(self._critic_input(i, o_tm1, a_pi))[:, 0]
                p_loss = -tf.reduce_mean(q_pi) + self._reg * tf.reduce_mean(tf.square(logits))
            self._actor_opt[i].apply(tape.gradient(p_loss, actor.weights), t)

            for net, target in ((actor, self.target_actors[i]), (critic, self.target_critics[i])):
                for v, tv in zip(net.weights, target.weights):
                    tv.assign((1.0 - self._tau) * tv + self._tau * v)
            q_losses.append(q_loss)
            p_losses.append(p_loss)
            q_means.append(tf.reduce_mean(q_tm1))
        return tf.stack(q_losses), tf.stack(p_losses), tf.stack(q_means)

    def step(self, obs: list[np.ndarray], act: list[np.ndarray], rew: np.ndarray, next_obs: list[np.ndarray],
             done: np.ndarray) -> dict[str, np.ndarray]:
        """One update of every agent; returns per-agent critic loss, actor loss and mean Q."""
        q_loss, p_loss, q = self._update(obs, act, rew, next_obs, done)
        return {"q_loss": q_loss.numpy(), "p_loss": p_loss.numpy(), "q": q.numpy()}

    def warm_up(self, obs, act, rew, next_obs, done) -> None:
        """Compiles the update on a batch of the right shapes and leaves every variable as it was.

        The first XLA compile takes seconds (a minute at N=20); doing it before serving keeps explorers from
        timing out on a learner that is compiling.
        """
        saved = {name: v.numpy() for name, v in self.variables().items()}
        self.step(obs, act, rew, next_obs, done)
        for name, v in self.variables().items():
            v.assign(saved[name])

    def actor_weights(self) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Numpy copies of the actors, for `maddpg.algo.policy.NumpyPolicy`."""
        return [a.numpy_weights() for a in self.actors]

    def variables(self) -> dict[str, tf.Variable]:
        """Every piece of learner state by a stable name, for checkpoints."""
        out: dict[str, tf.Variable] = {"updates": self.step_count, "rng_state": self.gen.state}
        nets = self.actors + self.critics + self.target_actors + self.target_critics
        for net in nets:
            for v in net.weights:
                out[v.name.split(":")[0]] = v
        for opt in self._actor_opt + self._critic_opt:
            for v in opt.m + opt.v:
                out[v.name.split(":")[0]] = v
        return out
