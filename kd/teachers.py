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

Routed teachers may read other tokenizers than the student's (each
teacher's own tokens of the same rows, `kd.data.mixed.paired_batches`):
the terms of a divergence over one vocabulary (forward_kl, ...) then
compare the student with the teachers of its tokenizer, and the
cross-tokenizer terms (`kd.losses.cross_tokenizer`: uld, hybrid_kl) with
each teacher of another, at that teacher's aligned positions with its
vocabulary map (`groups`). A mixture of distributions over different
vocabularies is not defined.

The mixture function is shared with the vision variant
(experiments/multi_teacher/weights.py).
"""
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from kd import config as kd_config
from kd import losses
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
  """K teacher models as one teacher: `outputs(variables, batch)`
  (`variables` a tuple, one per model) -> {'logits': ...}, the
  `mixture_logits` of `weights` at `temperature`, or with `routes` (source
  id -> teacher index) the `route` of each example by `batch[column]`.

  `vocab_maps` (routing only): per teacher, None where it reads the
  student's tokens, else its vocabulary map to the student's
  (`kd.data.align.vocab_map`): it reads `batch['teacher_image']` and its
  logits come as 'logits<k>' (`groups` pairs them with the terms)."""
  models: tuple
  weights: tuple = ()
  temperature: float = 1.0
  routes: tuple = ()
  column: str = 'source'
  vocab_maps: tuple = ()

  @property
  def across(self) -> bool:
    """Whether some teacher reads another tokenizer than the student."""
    return any(m is not None for m in self.vocab_maps)

  def logits(self, variables, x):
    """[K, B, T, V]: every teacher's logits on inputs `x`."""
    return jnp.stack([m.apply(v, x, train=False)[0].astype(jnp.float32)
                      for m, v in zip(self.models, variables)])

  def outputs(self, variables, batch) -> dict:
    if not self.across:
      t = self.logits(variables, batch['image'])
      if self.routes:
        return {'logits': route(t, jnp.asarray(self.routes)[
            batch[self.column]])}
      return {'logits': mixture_logits(self.weights, t, self.temperature)}
    which = self.which(batch)
    same = [k for k, m in enumerate(self.vocab_maps) if m is None]
    out = {}
    if same:  # Other teachers' rows read teacher same[0] (masked out).
      t = jnp.stack([self.models[k].apply(
          variables[k], batch['image'], train=False)[0].astype(jnp.float32)
                     for k in same])
      at = np.zeros(len(self.models), np.int32)
      at[same] = np.arange(len(same))
      out['logits'] = route(t, jnp.asarray(at)[which])
    for k, m in enumerate(self.vocab_maps):
      if m is not None:  # Its own tokens on its rows, token 0 elsewhere.
        x = jnp.where((which == k)[:, None], batch['teacher_image'], 0)
        out[f'logits{k}'] = self.models[k].apply(
            variables[k], x, train=False)[0].astype(jnp.float32)
    return out

  def which(self, batch):
    """[B]: each row's teacher."""
    return jnp.asarray(self.routes)[batch[self.column]]

  def groups(self, terms, teacher_out, batch):
    """(terms, teacher outputs, batch, share) per group of teachers whose
    rows a term reads as one: the teachers of the student's tokenizer
    (their routed 'logits'; `batch['mask']` kept to their rows) with the
    terms over one vocabulary, then each teacher k of another tokenizer
    ('logits<k>'; its aligned positions kept to its rows, its vocabulary
    map in the terms that take one) with the cross-tokenizer terms.
    `share` is the fraction of the batch's rows the group holds: a term's
    value is the sum over its groups of share x its mean over the group's
    rows, so on rows of one teacher it is that teacher's alone."""
    which = self.which(batch)
    aligned = {t.name: losses.spec(t.loss).inputs == 'aligned'
               for t in terms}
    same = [k for k, m in enumerate(self.vocab_maps) if m is None]
    if same:
      rows = jnp.isin(which, jnp.asarray(same)).astype(jnp.float32)
      yield ([t for t in terms if not aligned[t.name]],
             {'logits': teacher_out['logits']},
             {**batch, 'mask': batch['mask'] * rows[:, None]}, jnp.mean(rows))
    for k, m in enumerate(self.vocab_maps):
      if m is None:
        continue
      rows = (which == k).astype(jnp.float32)
      a = batch['align']
      yield ([with_vocab_map(t, m) for t in terms if aligned[t.name]],
             {'logits': teacher_out[f'logits{k}']},
             {**batch, 'teacher_label': jnp.where(
                 rows[:, None] > 0, batch['teacher_label'], 0),
              'align': {**a, 'aligned': a['aligned'] * rows[:, None],
                        'span': a['span'] * rows[:, None]}}, jnp.mean(rows))

  def apply(self, variables, x, train: bool = False):
    """(The mixture's logits, {}) on inputs alone: a routed run's teachers
    averaged (latency figures read this)."""
    del train
    t = self.logits(variables, x)
    w = self.weights or (1.0 / len(self.models),) * len(self.models)
    return mixture_logits(w, t, self.temperature), {}


def with_vocab_map(term, vocab_map):
  """`term` (a `kd.steps.Term`) with `vocab_map` (student ids, teacher ids)
  in its arguments, if its loss takes one (the aligned hybrid)."""
  if 'matched_student' not in inspect.signature(
      losses.spec(term.loss).fn).parameters:
    return term
  return dataclasses.replace(term, kwargs={
      **term.kwargs, 'matched_student': vocab_map[0],
      'matched_teacher': vocab_map[1]})


def run_dirs(distill) -> tuple[str, ...]:
  """The run directories of `config.distill.teachers` (comma-separated)."""
  return tuple(d.strip() for d in distill.get('teachers', '').split(',')
               if d.strip())


def numbers(text: str) -> tuple[float, ...]:
  return tuple(float(w) for w in text.split(',') if w.strip())


def normalised(weights) -> tuple[float, ...]:
  w = np.asarray(weights, np.float64)
  return tuple(float(x) for x in w / w.sum())


def check_column(data_name: str, column: str, mixed: bool) -> None:
  """Raises ConfigError if the batches of `data_name` (`mixed`: a mixed
  corpus, whose rows carry their `source`) lack `column`."""
  have = ('source',) if mixed else ()
  if column not in have:
    raise kd_config.ConfigError(
        f'config.distill.route_by={column!r}: the data ({data_name}) has no '
        f'column {column!r} (its columns: {", ".join(have) or "none"}); '
        "route over a mixed corpus (data.name='kd_pystdlib+kd_bbcnews', or "
        "your files with data.source_field naming each document's source: "
        'each row carries its source), or weight the teachers '
        '(distill.teacher_weights)')


def routes(data_name: str, sources, column: str, teacher_sources, dirs
           ) -> tuple[int, ...]:
  """Teacher index per source id of `data_name` (whose source names are
  `sources`, `kd.data.mixed.labels`; () for one corpus): the teacher whose
  source (`teacher_sources[k]`, of run `dirs[k]`) is that source. Raises
  ConfigError naming both sides and the fix: no such `column` in the data,
  a source taught twice, a source with no teacher."""
  check_column(data_name, column, bool(sources))
  taught = {}
  for k, (source, d) in enumerate(zip(teacher_sources, dirs)):
    if source in taught:
      raise kd_config.ConfigError(
          f'teachers {dirs[taught[source]]} and {d} both teach source '
          f'{source!r}: routing needs one teacher per source; drop one, or '
          'name their sources in distill.teacher_sources')
    taught[source] = k
  out = []
  for source in sources:
    if source not in taught:
      known = ', '.join(f'{s} ({dirs[k]})' for s, k in taught.items())
      raise kd_config.ConfigError(
          f'the data\'s source {source!r} (data.name={data_name!r}) has no '
          f'teacher (the teachers\' sources: {known}); add a teacher of '
          f'{source!r} to distill.teachers, or name the sources in '
          'distill.teacher_sources (one per teacher)')
    out.append(taught[source])
  return tuple(out)
