"""Trains and evaluates one run (a supervised model or a distilled student).

Reads top to bottom: data and models, train state (restored if the run was
interrupted), teacher, the compiled step, the loop, evaluation, export.
"""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections as mc
import numpy as np

from kd import cache as cache_lib
from kd import checkpoint
from kd import data
from kd import evaluate
from kd import loop
from kd import losses
from kd import models
from kd import optim
from kd import steps
from kd.logger import MetricLogger, read_metrics
from kd.parallel import DataParallel

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f'unknown dtype {name!r}; valid: {tuple(DTYPES)}')
  return DTYPES[name]


def teacher_dtype(name: str) -> str:
  if name == 'auto':
    return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
  return name


def build_model(name: str, kwargs, num_classes: int, dtype: str):
  return models.create(name, num_classes, dtype=_dtype(dtype),
                       **dict(kwargs or {}))


def distill_terms(config) -> tuple[steps.Term, ...]:
  return tuple(
      steps.Term(name=name, loss=t.loss, weight=float(t.weight),
                 student=t.student, teacher=t.teacher,
                 kwargs=t.kwargs.to_dict(), adapter=t.adapter,
                 adapter_kwargs=t.adapter_kwargs.to_dict())
      for name, t in config.distill.terms.items())


def _output_shapes(model, example) -> dict:
  logits, feats = jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x, train=False)[0], example)
  return {'logits': logits, **feats}


def check_terms(terms, student, teacher, example) -> None:
  """Fails before training on unknown losses, adapters, or features the
  losses cannot pair."""
  s_shapes = _output_shapes(student, example)
  t_shapes = _output_shapes(teacher, example)
  for term in terms:
    losses.get(term.loss)
    term.make_adapter()
    for side, key, shapes in (('student', term.student, s_shapes),
                              ('teacher', term.teacher, t_shapes)):
      if any(n not in shapes for n in steps.feature_names(shapes, key)):
        raise ValueError(
            f'distill term {term.name!r} ({term.loss}) asks for {side} '
            f'output {key!r}; the {side} has: {", ".join(sorted(shapes))}')
    if not term.adapter:  # An adapter reshapes the pair itself.
      shape = lambda x: jax.tree.map(lambda a: a.shape, x)
      losses.check_inputs(term.loss,
                          shape(steps.select(s_shapes, term.student)),
                          shape(steps.select(t_shapes, term.teacher)))


def init_adapters(terms, student, teacher, example, rng, num_examples):
  """Parameters and state of every term's adapter, keyed by term name."""
  s_out = _output_shapes(student, example)
  t_out = _output_shapes(teacher, example)
  params, state = {}, {}
  for i, term in enumerate(terms):
    adapter = term.make_adapter()
    if adapter is not None:
      zeros = lambda a: jnp.zeros((2, *a.shape[1:]), a.dtype)
      params[term.name], state[term.name] = adapter.init(
          jax.random.fold_in(rng, i),
          jax.tree.map(zeros, steps.select(s_out, term.student)),
          jax.tree.map(zeros, steps.select(t_out, term.teacher)),
          num_examples)
  return params, state


def teacher_outputs(teacher, terms, example) -> list[str]:
  """The teacher outputs a distillation reads: logits and every term's."""
  shapes = _output_shapes(teacher, example)
  return sorted({'logits'} | {name for term in terms
                              for name in steps.feature_names(shapes,
                                                              term.teacher)})


def sharded_teacher(parallel, teacher, teacher_vars, terms, example):
  """A wrapper for compiled steps `f(*args, batch)` that first puts the
  teacher's outputs in `batch['teacher']`, computed with its variables split
  over the mesh's model axis (`DataParallel.sharded_apply`)."""
  names = teacher_outputs(teacher, terms, example)
  forward, placed = parallel.sharded_apply(
      lambda v, x: {k: o for k, o in steps.outputs(
          *teacher.apply(v, x, train=False)).items() if k in names},
      teacher_vars)

  def with_teacher(fn):
    def run(*args):
      *rest, batch = args
      return fn(*rest, {**batch, 'teacher': forward(placed, batch['image'])})
    return run

  return with_teacher


def teacher_cache(config, workdir, teacher, teacher_vars, terms, example):
  """The teacher-output cache of this run's teacher and training data
  (`kd.cache`): logits and every feature a term reads, built on first use
  in `distill.teacher.cache_dir` (default WORKDIR/teacher_cache)."""
  t = config.distill.teacher
  cache_lib.check_usable(config)
  names = teacher_outputs(teacher, terms, example)
  meta = cache_lib.provenance(config, checkpoint.latest_step(t.workdir),
                              teacher_vars, teacher_dtype(t.dtype))
  # Variables as an argument, not as constants folded into the program.
  forward = functools.partial(jax.jit(lambda v, x: steps.outputs(
      *teacher.apply(v, x, train=False))), teacher_vars)
  return cache_lib.open_or_build(
      t.cache_dir or os.path.join(workdir, 'teacher_cache'), meta, forward,
      config, names)


def warm_start(state, run_dir: str, name: str):
  """`state` with the student (parameters and model state) and every
  adapter of the same term name and shapes taken from `run_dir`'s last
  checkpoint: how a pre-training stage (FitNets, FT's paraphraser, AB's
  connectors) hands its result to the next. Optimizer state starts fresh."""
  found, step = checkpoint.load_state(run_dir, f'[{name}] init_from')
  variables = {'params': found['params'], **found['model_state']}
  checkpoint.check_same_structure(
      {'params': state.params, **state.model_state}, variables,
      f'init_from run {run_dir} (step {step})')
  aux = dict(state.aux_params)
  taken = [k for k, v in found.get('aux_params', {}).items()
           if k in aux and checkpoint.flat_shapes(v) ==
           checkpoint.flat_shapes(aux[k])]
  aux.update({k: found['aux_params'][k] for k in taken})
  print(f'[{name}] initialised from {run_dir} (step {step}): the student'
        + ''.join(f', adapter {k!r}' for k in taken))
  return state.replace(params=found['params'],
                       model_state=dict(found['model_state']), aux_params=aux)


def _test_row(stats: dict) -> dict:
  return {k: stats[k] for k in ('test_accuracy', 'test_loss')}


def train_and_evaluate(config: mc.ConfigDict, workdir: str,
                       name: str = 'train') -> dict:
  """Runs `config` in `workdir`, resuming from its checkpoints; returns the
  run's summary (also written to `workdir/summary.json`)."""
  os.makedirs(workdir, exist_ok=True)
  done = loop.finished_summary(workdir, config.steps)
  if done is not None:
    print(f'[{name}] already finished in {workdir}; reusing its results')
    return done
  loop.write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  # Data and models.
  d = config.data
  data_kw = dict(data_dir=d.data_dir or None, image_size=d.image_size or None,
                 download=d.download)
  spec = data.spec(d.name, image_size=data_kw['image_size'])
  t = config.distill.teacher
  if t.cache and t.model_shards > 1:
    raise ValueError('distill.teacher.cache builds on one device; with '
                     'model_shards > 1 keep the teacher live (cache=False)')
  parallel = DataParallel(config.parallel, model_shards=t.model_shards)
  parallel.check_batch_size(config.batch_size)  # Fails early on a bad size.
  model = build_model(config.model.name, config.model.kwargs,
                      spec.num_classes, config.dtype)
  example = np.zeros((1, *spec.input_shape), np.float32)

  # Train state, restored when the run was interrupted.
  tx, lr_schedule = optim.create(config.optimizer, config.steps)
  teacher = teacher_vars = None
  terms, aux_params, aux_state = (), {}, {}
  if t.workdir:
    teacher = build_model(t.model, t.kwargs, spec.num_classes,
                          teacher_dtype(t.dtype))
    terms = distill_terms(config)
    check_terms(terms, model, teacher, example)
    aux_params, aux_state = init_adapters(
        terms, model, teacher, example, jax.random.key(config.seed + 1),
        data.num_examples(d.name, 'train', d.data_dir or None, d.download))
  elif len(config.distill.terms):
    raise ValueError('config.distill.terms is set but no teacher is: set '
                     'config.distill.teacher.workdir (and .model)')
  state = steps.create_state(model, tx, jax.random.key(config.seed), example,
                             aux_params, aux_state)
  if config.init_from:
    state = warm_start(state, config.init_from, name)
  mngr, state = loop.restore(config, workdir, state, name)

  # Teacher: frozen variables, passed to the step as data; or its outputs
  # put in each batch, read from a cache or computed by a teacher split over
  # the mesh's model axis.
  extra, train_extra, extend_batch, with_teacher = (), (), None, None
  if teacher is not None:
    teacher_vars = checkpoint.load_variables(t.workdir, jax.eval_shape(
        lambda: teacher.init(jax.random.key(0), example, train=False)))
    if t.model_shards > 1:
      with_teacher = sharded_teacher(parallel, teacher, teacher_vars, terms,
                                     example)
    else:
      extra = (parallel.replicate(teacher_vars),)  # For evaluation too.
      if t.cache:
        cache = teacher_cache(config, workdir, teacher, teacher_vars, terms,
                              example)
        extend_batch = lambda b: {**b, 'teacher': cache.lookup(b['index'])}
      else:
        train_extra = extra
    train_step = parallel.wrap(steps.make_distill_step(
        model, teacher if train_extra else None, tx, terms,
        config.distill.ce_weight, config.label_smoothing, config.seed,
        config.mixup_alpha, config.distill.quantization_aware),
                               num_replicated=1 + len(train_extra))
  else:
    train_step = parallel.wrap(
        steps.make_supervised_step(model, tx, config.label_smoothing,
                                   config.seed, config.mixup_alpha,
                                   config.distill.quantization_aware),
        num_replicated=1)

  # Test-split evaluation: every `eval_every` steps and at the end.
  eval_fn = parallel.wrap(
      steps.make_eval_step(model, teacher if extra else None),
      1 + len(extra), donate_first=False)
  if with_teacher is not None:
    train_step, eval_fn = with_teacher(train_step), with_teacher(eval_fn)

  def test(p_state) -> dict:
    variables = {'params': p_state.params, **p_state.model_state}
    batches = data.eval_batches(d.name, batch_size=config.eval_batch_size,
                                split=d.eval_split, **data_kw)
    return evaluate.run_eval(eval_fn, parallel, (variables, *extra), batches)

  # The loop.
  logger = MetricLogger(workdir, config)
  p_state, train_seconds = loop.run(
      config, name, parallel, mngr, logger, state, train_step, train_extra,
      lambda p: _test_row(test(p)), lr_schedule, extend_batch)

  # Evaluation.
  stats = test(p_state)
  logger.write(config.steps, _test_row(stats))
  tested = [r for r in read_metrics(workdir) if 'test_accuracy' in r]
  best = max(tested, key=lambda r: r['test_accuracy'], default=None)
  if best is not None:
    stats.update(best_test_accuracy=best['test_accuracy'],
                 best_test_step=float(best['step']))
  state = parallel.unreplicate(p_state)
  variables = {'params': state.params, **state.model_state}
  summary = {'steps': config.steps,
             'params': float(evaluate.count_params(state.params)),
             'train_seconds': train_seconds, **stats}
  if config.evaluate.latency:
    summary['latency_ms'] = evaluate.model_latency_ms(model, variables,
                                                      spec.input_shape)
    if teacher is not None:
      summary['teacher_latency_ms'] = evaluate.model_latency_ms(
          teacher, teacher_vars, spec.input_shape)
  if config.export.formats and jax.process_index() == 0:
    summary.update(export_student(config, workdir, model, variables))
  logger.summary(summary)
  logger.close()
  loop.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def export_student(config, workdir, model, variables) -> dict:
  """Writes `student_<format>.tflite` (+ .json) files; returns their figures
  as summary entries `tflite_<format>_<figure>`."""
  from kd.export import student  # pylint: disable=import-outside-toplevel
  out = {}
  for fmt in config.export.formats:
    side = student.export(
        config, model, variables, os.path.join(workdir, f'student_{fmt}.tflite'),
        quantize='none' if fmt == 'float32' else fmt, step=config.steps,
        latency=config.evaluate.latency)
    out.update({f'tflite_{fmt}_accuracy': side['tflite_accuracy'],
                f'tflite_{fmt}_bytes': float(side['bytes']),
                f'tflite_{fmt}_max_abs_logit_diff': side['max_abs_diff_vs_jax'],
                f'tflite_{fmt}_agreement_with_jax': side['agreement_with_jax']})
    if 'latency_ms' in side:
      out[f'tflite_{fmt}_latency_ms'] = side['latency_ms']['tflite_batch1']
  return out
