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

With the `pooled` critic (a departure, see algo/README.md and networks.PooledCritic) the maddpg agents' critics
are one network whose input does not grow with N: it steps once per update, on the sum of their losses, before
the actors step one after another against it; the target actions come from the targets before the update.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from maddpg.algo import distributions as D
from maddpg.acting.heads import Head
from maddpg.algo.networks import MLP, PooledCritic
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
      critic: "joint" (the original: each maddpg agent's critic reads every observation and action) or
        "pooled" (networks.PooledCritic).
    """

    def __init__(self, env_spec: EnvSpec, heads: list[Head], policies: list[str], *, num_units: int = 64,
                 lr: float = 1e-2, gamma: float = 0.95, tau: float = 0.01, grad_norm_clip: float = 0.5,
                 actor_reg: float = 1e-3, seed: int = 0, jit: bool = True, shared_batch: bool = False,
                 critic: str = "joint"):
        self.heads, self.policies, self.shared_batch = heads, policies, shared_batch
        self._gamma, self._tau, self._reg = gamma, tau, actor_reg
        obs_dims = env_spec.obs_dims
        act_dims = [h.action_dim for h in heads]
        rng = np.random.default_rng(seed)
        # A critic network of its own per agent: every agent with the joint critic, the ddpg agents (local
        # critics) with the pooled one, whose maddpg agents share its encoders.
        self.actors, self.critics = [], {}
        self.pooled: PooledCritic | None = None
        for i, agent in enumerate(env_spec.agents):
            self.actors.append(MLP(obs_dims[i], heads[i].param_dim, num_units, rng, f"{agent.name}/actor"))
            if policies[i] == "ddpg":
                self.critics[i] = MLP(obs_dims[i] + act_dims[i], 1, num_units, rng, f"{agent.name}/critic")
            elif critic == "joint":
                self.critics[i] = MLP(sum(obs_dims) + sum(act_dims), 1, num_units, rng, f"{agent.name}/critic")
        pooled_heads = {i: a.name for i, a in enumerate(env_spec.agents) if policies[i] == "maddpg"}
        if critic == "pooled" and pooled_heads:
            kinds = [(o, a, agent.adversary) for o, a, agent in zip(obs_dims, act_dims, env_spec.agents)]
            self.pooled = PooledCritic(kinds, [o + a for o, a in zip(obs_dims, act_dims)], pooled_heads, num_units,
                                       rng, "critic")
        # Targets start as copies (openai/maddpg initialised them independently; see algo/README.md).
        self.target_actors = [net.copy(rng, net.name + "_target") for net in self.actors]
        self.target_critics = {i: net.copy(rng, net.name + "_target") for i, net in self.critics.items()}
        self._actor_opt = [Adam(a.weights, lr, grad_norm_clip, f"{a.name}/adam") for a in self.actors]
        self._critic_opt = {i: Adam(c.weights, lr, grad_norm_clip, f"{c.name}/adam") for i, c in self.critics.items()}
        if self.pooled is not None:
            self.target_pooled = self.pooled.copy(rng, "_target")
            self._pooled_opt = Adam(self.pooled.weights, lr, grad_norm_clip, "critic/adam")
        self.step_count = tf.Variable(0, dtype=tf.int64, name="updates")
        self.gen = tf.random.Generator.from_seed(seed + 1)
        self._update = tf.function(self._update_all, jit_compile=jit, reduce_retracing=True)

    def _critic_input(self, i: int, obs: list[tf.Tensor], act: list[tf.Tensor]) -> tf.Tensor:
        if self.policies[i] == "maddpg":
            return tf.concat(obs + act, axis=-1)  # [B, sum(obs) + sum(act)]
        return tf.concat([obs[i], act[i]], axis=-1)

    def _target_actions(self, o_t: list[tf.Tensor]) -> list[tf.Tensor]:
        return [D.sample(h, net(o), self.gen) for h, net, o in zip(self.heads, self.target_actors, o_t)]

    def _mine(self, i: int, x: tf.Tensor) -> tf.Tensor:
        """Agent i's batch of a field: the shared batch itself, or slice i of the batches per agent."""
        return x if self.shared_batch else x[i]

    def _pooled_critic_step(self, obs, act, rew, next_obs, done, a_t, t):
        """One Adam step of the pooled critic on the sum of its agents' losses (MAAC's joint regression loss);
        returns each agent's (loss, mean Q) and every agent's embedding under the stepped critic, for the actors."""
        pooled, target = self.pooled, self.target_pooled
        e_t = target.embed(next_obs, a_t)  # per agent [B, U], or [N, B, U] with a batch per agent
        pool_t = target.pool(e_t)
        ys = {}
        for i in pooled.heads:
            q_t = target.q(i, self._mine(i, e_t[i]), self._mine(i, pool_t))  # [B]
            ys[i] = tf.stop_gradient(rew[i] + self._gamma * (1.0 - done[i]) * q_t)
        with tf.GradientTape() as tape:
            e = pooled.embed(obs, act)
            pool = pooled.pool(e)
            q_tm1 = {i: pooled.q(i, self._mine(i, e[i]), self._mine(i, pool)) for i in pooled.heads}
            losses = {i: tf.reduce_mean(tf.square(q_tm1[i] - ys[i])) for i in pooled.heads}
            q_loss = tf.add_n(list(losses.values()))
        self._pooled_opt.apply(tape.gradient(q_loss, pooled.weights), t)
        e = [tf.stop_gradient(x) for x in pooled.embed(obs, act)]
        return {i: (losses[i], tf.reduce_mean(q_tm1[i])) for i in pooled.heads}, e

    def _update_all(self, obs, act, rew, next_obs, done):
        """obs/act/next_obs: per agent j, [N, B, dim_j] (slice i = the batch sampled for agent i), or [B, dim_j]
        with `shared_batch`; rew/done: [N, B] (agent i's own reward and done on its batch)."""
        self.step_count.assign_add(1)
        t = tf.cast(self.step_count, tf.float32)
        n = len(self.actors)
        # Target actions once, from the targets before the update: with `shared_batch` (one batch), or with the
        # pooled critic, which steps once for every agent before any actor moves (on each agent's batch).
        a_t_all = self._target_actions(next_obs) if self.shared_batch or self.pooled is not None else None
        metrics = {}
        if self.pooled is not None:
            metrics, e = self._pooled_critic_step(obs, act, rew, next_obs, done, a_t_all, t)
        q_losses, p_losses, q_means = [], [], []
        for i in range(n):
            o_tm1, a_tm1, o_t = ([self._mine(i, x) for x in field] for field in (obs, act, next_obs))
            if i in self.critics:
                a_t = self._target_actions(o_t) if a_t_all is None else [self._mine(i, x) for x in a_t_all]
                metrics[i] = self._own_critic_step(i, o_tm1, a_tm1, o_t, a_t, rew[i], done[i], t)

            actor = self.actors[i]
            with tf.GradientTape() as tape:
                logits = actor(o_tm1[i])
                a_pi = D.sample(self.heads[i], logits, self.gen)
                if i in self.critics:
                    a_all = list(a_tm1)
                    a_all[i] = a_pi
                    q_pi = self.critics[i](self._critic_input(i, o_tm1, a_all))[:, 0]
                else:  # agent i's embedding under its new action, the others' as they are
                    e_pi = [self._mine(i, x) for x in e]
                    e_pi[i] = self.pooled.embed_agent(i, o_tm1[i], a_pi)
                    q_pi = self.pooled.q(i, e_pi[i], self.pooled.pool(e_pi))
                p_loss = -tf.reduce_mean(q_pi) + self._reg * tf.reduce_mean(tf.square(logits))
            self._actor_opt[i].apply(tape.gradient(p_loss, actor.weights), t)

            self._polyak(actor, self.target_actors[i])
            if i in self.critics:
                self._polyak(self.critics[i], self.target_critics[i])
            q_losses.append(metrics[i][0])
            p_losses.append(p_loss)
            q_means.append(metrics[i][1])
        if self.pooled is not None:
            self._polyak(self.pooled, self.target_pooled)
        return tf.stack(q_losses), tf.stack(p_losses), tf.stack(q_means)

    def _own_critic_step(self, i, o_tm1, a_tm1, o_t, a_t, r_t, d_t, t):
        """Agent i's joint or local critic: one Adam step on its own loss; returns (loss, mean Q)."""
        q_t = self.target_critics[i](self._critic_input(i, o_t, a_t))[:, 0]  # [B]
        y = tf.stop_gradient(r_t + self._gamma * (1.0 - d_t) * q_t)
        critic = self.critics[i]
        with tf.GradientTape() as tape:
            q_tm1 = critic(self._critic_input(i, o_tm1, a_tm1))[:, 0]
            q_loss = tf.reduce_mean(tf.square(q_tm1 - y))
        self._critic_opt[i].apply(tape.gradient(q_loss, critic.weights), t)
        return q_loss, tf.reduce_mean(q_tm1)

    def _polyak(self, net: MLP | PooledCritic, target: MLP | PooledCritic) -> None:
        for v, tv in zip(net.weights, target.weights, strict=True):
            tv.assign((1.0 - self._tau) * tv + self._tau * v)

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
        """Numpy copies of the actors, for `maddpg.acting.policy.NumpyPolicy`."""
        return [a.numpy_weights() for a in self.actors]

    def variables(self) -> dict[str, tf.Variable]:
        """Every piece of learner state by a stable name, for checkpoints."""
        out: dict[str, tf.Variable] = {"updates": self.step_count, "rng_state": self.gen.state}
        nets = self.actors + list(self.critics.values()) + self.target_actors + list(self.target_critics.values())
        if self.pooled is not None:
            nets += self.pooled.encoders + list(self.pooled.heads.values())
            nets += self.target_pooled.encoders + list(self.target_pooled.heads.values())
        for net in nets:
            for v in net.weights:
                out[v.name.split(":")[0]] = v
        for opt in self._actor_opt + list(self._critic_opt.values()) + ([self._pooled_opt] if self.pooled else []):
            for v in opt.m + opt.v:
                out[v.name.split(":")[0]] = v
        return out
