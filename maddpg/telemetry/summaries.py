"""TensorBoard event files of a training run (tf.summary): episode rewards, losses and Q per agent, throughput.

Only trainers write them (the single-process loop and the learner; explorers never import TensorFlow), into the
run folder, so that `tensorboard --logdir runs/` shows every run. Every scalar's step is the run's env-step count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from maddpg.episodes import Episode

EVENT_FILES = "events.out.tfevents.*"
LOSS_TAGS = {"q_loss": "critic_loss", "p_loss": "actor_loss", "q": "q_value"}  # update metric -> tag


class ScalarTable:
    """Rows of scalars under fixed tags, one env step per row, buffered until `write()`.

    An eager `tf.summary.scalar` costs about 0.8 ms, too much for every episode on the trainer's thread;
    one compiled call writes a whole buffer at about 13 us a value.
    """

    def __init__(self, tags: Sequence[str]):
        self.tags = list(tags)
        self._steps: list[int] = []
        self._rows: list[list[float]] = []
        self._write_rows = tf.function(self._graph, input_signature=[
            tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, len(self.tags)], tf.float32)])

    def add(self, step: int, values: Sequence[float]) -> None:
        self._steps.append(int(step))
        self._rows.append([float(v) for v in values])

    def write(self) -> None:
        """Writes the buffered rows to the default summary writer (call it under `writer.as_default()`)."""
        if self._steps:
            self._write_rows(np.asarray(self._steps, np.int64), np.asarray(self._rows, np.float32))
            self._steps, self._rows = [], []

    def _graph(self, steps, values):
        # tf.summary.write, not tf.summary.scalar: that one prefixes the loop's name scope ("while/") to tags
        scalar = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        for i in tf.range(tf.shape(steps)[0]):
            for j, tag in enumerate(self.tags):
                tf.summary.write(tag, values[i, j], step=steps[i], metadata=scalar)
        return tf.constant(True)


class RunSummaries:
    """The TensorBoard scalars of one run, appended to the event files of its earlier lives.

    Tags: `charts/episode_reward` (the reward summed over agents) and `charts/agent_reward/AGENT`: the mean of
    the episodes that ended at an env step (one episode in a loop of one env; an explorer's envs all end theirs
    at the same step, and one row for them all keeps the trainer's cost small); `losses/{critic_loss,actor_loss,
    q_value}/AGENT` of an update; `charts/{env_steps,updates}_per_s`.

    Call order: `episode()`, `losses()` and `pace()` as they come; `flush()` whenever a checkpoint is taken, so
    that the event files hold everything it accounts for; `close()` at the end. Rows are written at least every
    `max_delay` seconds.

    Args:
      logdir: the run folder. agent_ids: the agents' names.
      env_steps: where the run starts (its restored checkpoint's count). Events of an earlier life of the run
        beyond it, written after that checkpoint and before a crash, are dropped, as rewards.csv drops its rows
        beyond it: TensorBoard shows each step of the run once.
    """

    def __init__(self, logdir: Path, agent_ids: Sequence[str], env_steps: int, max_delay: float = 2.0):
        drop_events_after(logdir, env_steps)
        self._writer = tf.summary.create_file_writer(str(logdir), flush_millis=10_000)  # TensorBoard polls 5 s
        self._episodes = ScalarTable(["charts/episode_reward", *(f"charts/agent_reward/{a}" for a in agent_ids)])
        self._losses = ScalarTable([f"losses/{tag}/{a}" for tag in LOSS_TAGS.values() for a in agent_ids])
        self._pace = ScalarTable(["charts/env_steps_per_s", "charts/updates_per_s"])
        self._max_delay = max_delay
        self._written = time.monotonic()
        self._ended_at = 0  # the env step at which the newest episodes ended
        self._ended: list[list[float]] = []  # their rewards: [sum over agents, agent 0, agent 1, ...]

    def episode(self, env_steps: int, episode: Episode) -> None:
        """An episode that ended at `env_steps` (steps never go back)."""
        if self._ended and env_steps != self._ended_at:
            self._end_step()
            self._maybe_write()
        self._ended_at = env_steps
        self._ended.append([episode.total, *episode.per_agent])

    def losses(self, env_steps: int, metrics: dict[str, np.ndarray]) -> None:
        """An update's metrics: per-agent arrays under the keys of LOSS_TAGS."""
        self._losses.add(env_steps, np.concatenate([np.ravel(metrics[key]) for key in LOSS_TAGS]))
        self._maybe_write()

    def pace(self, env_steps: int, env_steps_per_s: float, updates_per_s: float) -> None:
        self._pace.add(env_steps, [env_steps_per_s, updates_per_s])
        self._maybe_write()

    def flush(self) -> None:
        """Writes every row (loops call it between two steps or chunks) and flushes the event file."""
        self._end_step()
        self._write()
        self._writer.flush()

    def close(self) -> None:
        self._end_step()
        self._write()
        self._writer.close()

    def _end_step(self) -> None:
        if self._ended:
            self._episodes.add(self._ended_at, np.mean(self._ended, axis=0))
            self._ended = []

    def _maybe_write(self) -> None:
        if time.monotonic() - self._written >= self._max_delay:
            self._write()

    def _write(self) -> None:
        with self._writer.as_default():
            for table in (self._episodes, self._losses, self._pace):
                table.write()
        self._written = time.monotonic()


def drop_events_after(logdir: Path, env_steps: int) -> int:
    """Rewrites the event files in `logdir` without their scalars of steps beyond `env_steps` (and without a
    record cut short by a crash); returns how many events were dropped."""
    dropped = 0
    for path in sorted(Path(logdir).glob(EVENT_FILES)):
        kept, cut = _records(path)
        events = [tf.compat.v1.Event.FromString(record) for record in kept]
        beyond = [e.HasField("summary") and e.step > env_steps for e in events]
        if cut or any(beyond):
            tmp = path.with_name(f".{path.name}.tmp")
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for record, drop in zip(kept, beyond, strict=True):
                    if not drop:
                        writer.write(record)
            os.replace(tmp, path)
            dropped += sum(beyond)
    return dropped


def _records(path: Path) -> tuple[list[bytes], bool]:
    """The records of a TFRecord file, and whether it ends in one cut short (the process died writing it)."""
    records: list[bytes] = []
    dataset = tf.data.TFRecordDataset(str(path))
    try:
        for batch in dataset.batch(4096).as_numpy_iterator():
            records.extend(batch)
        return records, False
    except tf.errors.DataLossError:
        pass
    try:  # the batch that failed, one record at a time
        for record in dataset.skip(len(records)).as_numpy_iterator():
            records.append(record)
    except tf.errors.DataLossError:
        pass
    return records, True
