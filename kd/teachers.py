"""Several frozen language-model teachers in one distillation run.

K teachers t_1..t_K (run directories, `config.distill.teachers`) of the
student's vocabulary become one teacher whose logits the distillation
terms read as they read a single teacher's:

- mixture (`config.distill.teacher_weights`, default the average): the
  target is p = sum_k w_k softmax(t_k / T), handed to the terms as the
  logits T log p, so that a term's softmax(. / T) is p itself (all the
  terms share one temperature T). Because d KL(p || q) / d s is linear in
  p, KL(p || q) has the gradient of sum_k w_k KL(p_k || q).
- routing (`config.distill.route_by='source'`): each example (a packed row
  of one source, `kd.data.text`) takes the logits of the teacher of its
  source, t[b] = t_{k(b)}[b]: on a batch of one source, exactly that
  teacher's.

The mixture function is shared with the vision variant
(experiments/multi_teacher/weights.py).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from kd import config as kd_config
from kd.losses import divergences


def _per_example(weights, logits):
  """`weights` [K] or [K, B] broadcast against `logits` [K, B, ...]."""
  w = jnp.asarray(weights, jnp.float32)
  if w.ndim == 1:
    w = jnp.broadcast_to(w[:, None], logits.shape[:2])
  return w.reshape(w.shape + (1,) * (logits.ndim - 2))


def mixture(weights, teacher_logits, temperature: float = 1.0):
  """[B, ..., V]: sum_k w_k softmax(t_k / T), `teacher_logits` [K, B, ...,
  V], `weights` [K] or [K, B] (each summing to 1 over K)."""
  p = divergences.tempered_softmax(teacher_logits, temperature)
  return jnp.sum(_per_example(weights, teacher_logits) * p, 0)


def mixture_logits(weights, teacher_logits, temperature: float = 1.0):
  """[B, ..., V]: T log sum_k w_k softmax(t_k / T), computed in log space
  (logsumexp_k of log w_k + log_softmax(t_k / T)): logits whose
  softmax(. / T) is the `mixture`. A zero weight drops its teacher."""
  log_p = divergences.tempered_log_softmax(teacher_logits, temperature)
  w = _per_example(weights, teacher_logits)
  log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  return temperature * jax.nn.logsumexp(log_w + log_p, axis=0)


def route(teacher_logits, which):
  """[B, ...]: example b's logits from teacher `which[b]`, of
  `teacher_logits` [K, B, ...]."""
  return teacher_logits[which, jnp.arange(teacher_logits.shape[1])]


@dataclasses.dataclass(frozen=True, eq=False)
class Teachers:
  """K teacher models of one vocabulary as one teacher: `outputs(variables,
  batch)` (`variables` a tuple, one per model) -> {'logits': ...}, the
  `mixture_logits` of `weights` at `temperature`, or with `routes` (source
  id -> teacher index) the `route` of each example by `batch[column]`."""
  models: tuple
  weights: tuple = ()
  temperature: float = 1.0
  routes: tuple = ()
  column: str = 'source'

  def logits(self, variables, x):
    """[K, B, T, V]: every teacher's logits on inputs `x`."""
    return jnp.stack([m.apply(v, x, train=False)[0].astype(jnp.float32)
                      for m, v in zip(self.models, variables)])

  def outputs(self, variables, batch) -> dict:
    t = self.logits(variables, batch['image'])
    if self.routes:
      return {'logits': route(t, jnp.asarray(self.routes)[batch[self.column]])}
    return {'logits': mixture_logits(self.weights, t, self.temperature)}

  def apply(self, variables, x, train: bool = False):
    """(The mixture's logits, {}) on inputs alone: a routed run's teachers
    averaged (latency figures read this)."""
    del train
    t = self.logits(variables, x)
    w = self.weights or (1.0 / len(self.models),) * len(self.models)
    return mixture_logits(w, t, self.temperature), {}


def run_dirs(distill) -> tuple[str, ...]:
  """The run directories of `config.distill.teachers` (comma-separated)."""
  return tuple(d.strip() for d in distill.get('teachers', '').split(',')
               if d.strip())


def numbers(text: str) -> tuple[float, ...]:
  return tuple(float(w) for w in text.split(',') if w.strip())


def normalised(weights) -> tuple[float, ...]:
  w = np.asarray(weights, np.float64)
  return tuple(float(x) for x in w / w.sum())


def data_sources(data_name: str) -> tuple[str, ...]:
  """The sources of config.data.name: a mixed corpus's parts
  ('kd_pystdlib+kd_bbcnews'), a row's `source` its index here."""
  return tuple(data_name.split('+'))


def columns(data_name: str) -> tuple[str, ...]:
  """The per-row columns a batch of `data_name` carries."""
  return ('source',) if len(data_sources(data_name)) > 1 else ()


def check_column(data_name: str, column: str) -> None:
  """Raises ConfigError if the batches of `data_name` lack `column`."""
  have = columns(data_name)
  if column not in have:
    raise kd_config.ConfigError(
        f'config.distill.route_by={column!r}: the data ({data_name}) has no '
        f'column {column!r} (its columns: {", ".join(have) or "none"}); '
        "route over a mixed corpus (data.name='kd_pystdlib+kd_bbcnews': "
        'each row carries its source), or weight the teachers '
        '(distill.teacher_weights)')


def routes(data_name: str, column: str, teacher_sources, dirs
           ) -> tuple[int, ...]:
  """Teacher index per source id of `data_name`: the teacher whose source
  (`teacher_sources[k]`, of run `dirs[k]`) is that source. Raises
  ConfigError naming both sides and the fix: no such `column` in the data,
  a source taught twice, a source with no teacher."""
  check_column(data_name, column)
  taught = {}
  for k, (source, d) in enumerate(zip(teacher_sources, dirs)):
    if source in taught:
      raise kd_config.ConfigError(
          f'teachers {dirs[taught[source]]} and {d} both teach source '
          f'{source!r}: routing needs one teacher per source; drop one, or '
          'name their sources in distill.teacher_sources')
    taught[source] = k
  out = []
  for source in data_sources(data_name):
    if source not in taught:
      known = ', '.join(f'{s} ({dirs[k]})' for s, k in taught.items())
      raise kd_config.ConfigError(
          f'the data\'s source {source!r} (data.name={data_name!r}) has no '
          f'teacher (the teachers\' sources: {known}); add a teacher of '
          f'{source!r} to distill.teachers, or name the sources in '
          'distill.teacher_sources (one per teacher)')
    out.append(taught[source])
  return tuple(out)
