"""Trains and evaluates one run (a supervised model or a distilled student).

`train_and_evaluate` reads top to bottom: `build` (data spec, models, train
state), `teacher_source` (how the step sees the teacher), `train_from_checkpoint` (restore,
compile, the loop with its tests), `finish` (summary, latency, export).
"""
import dataclasses
import functools
import inspect
import os
from typing import Any, Callable, NamedTuple

import jax
import ml_collections as mc
import numpy as np

from kd import adapters
from kd import cache as cache_lib
from kd import checkpoint
from kd import config as kd_config
from kd import data
from kd import fold
from kd import latency
from kd import loop
from kd import losses
from kd import metrics
from kd import models
from kd import optim
from kd import runs
from kd import sampling
from kd import seqkd
from kd import sharding
from kd import steps
from kd import teachers as teachers_lib
from kd.data import select
from kd.models import encoder
from kd.models import flax_module
from kd.models import lm
from kd.prune import run as prune_run
from kd.logger import MetricLogger
from kd.parallel import DataParallel

def teacher_dtype(name: str) -> str:
  if name == 'auto':
    return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
  return name


def distill_terms(config) -> tuple[steps.Term, ...]:
  return tuple(
      steps.Term(name=name, loss=t.loss, weight=float(t.weight),
                 student=t.student, teacher=t.teacher,
                 kwargs=t.kwargs.to_dict(), adapter=t.adapter,
                 adapter_kwargs=t.adapter_kwargs.to_dict(),
                 num_steps=config.steps)
      for name, t in config.distill.terms.items())


def _output_shapes(model, example) -> dict:
  logits, feats = jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x, train=False)[0], example)
  return {'logits': logits, **feats}


def check_terms(terms, student, teacher, example) -> None:
  """`steps.check_terms` for two models' outputs on `example`."""
  steps.check_terms(terms, _output_shapes(student, example),
                    _output_shapes(teacher, example))


def init_adapters(terms, student, teacher, example, rng, num_examples):
  """`steps.init_adapters` for two models' outputs on `example`."""
  return steps.init_adapters(terms, _output_shapes(student, example),
                             _output_shapes(teacher, example), rng,
                             num_examples)


def preflight(config) -> None:
  """What `kd.config.validate` cannot check without the registries and the
  data: every name (dataset, model, teacher model, loss, adapter) exists,
  and the training and test splits exist and hold examples. A pipeline's
  every stage is checked before the first starts: a typo in the student
  stage must not wait for the teacher to train. Raises ValueError naming
  the field and the fix."""
  if 'stages' in config:
    for name in config.stage_order:
      _preflight_run(config.stages[name], f'stages.{name}.')
      _check_stage_tokenizers(config, name)
      _check_stage_teachers(config, name)
      prune_run.check_stage(config, name)
      prune_run.check_run_init_from(config.stages[name])
  else:
    _preflight_run(config, '')
    prune_run.check_run_init_from(config)


def _check_stage_tokenizers(config, name: str) -> None:
  """A cross-tokenizer stage whose teacher is an earlier stage configured
  with the same tokenizer (the same kind, size, files and data) is refused
  before that teacher trains."""
  c = config.stages[name]
  teacher = config.stages.get(c.distill.teacher.workdir)
  keys = ('tokenizer', 'vocab_size', 'tokenizer_path', 'name', 'files')
  if teacher is not None and is_cross_tokenizer(c) and (
      teacher.data.tokenizer == c.data.tokenizer == 'byte' or all(
          teacher.data[k] == c.data[k] for k in keys)):
    raise same_tokenizer_error(c, f'stage {c.distill.teacher.workdir!r}',
                               c.data.tokenizer)


def same_tokenizer_error(config, teacher: str, kind: str, size: str = ''):
  """The error of cross-tokenizer terms on one tokenizer."""
  return kd_config.ConfigError(
      f'the cross-tokenizer terms {cross_terms(config)} pair two '
      'tokenizations, but the '
      f'teacher ({teacher}) and the student read the same {kind} tokenizer'
      f'{size}: plain KL is exact there; use loss=\'forward_kl\' (or another '
      'divergence of kd.losses)')


def _preflight_run(c, at: str) -> None:
  def fail(field, value, why, fix):
    raise kd_config.ConfigError(
        f'config.{at}{field}={value!r}: {why}; {fix}')

  text = data.text.is_text(c.data.name)
  if not text and c.data.name not in data.names():
    fail('data.name', c.data.name, 'unknown dataset', 'valid: ' + ', '.join(
        data.names() + list(data.text.TEXT)))
  t = c.distill.teacher
  for field, name in (('model.name', c.model.name),
                      ('distill.teacher.model', t.model if t.workdir else '')):
    if name and name not in models.names() and not name.startswith(
        flax_module.PREFIX):
      fail(field, name, 'unknown model', 'valid: ' + ', '.join(models.names())
           + f', or a module of your own as "{flax_module.PREFIX}'
           'package.path:ClassName"')
  for name, term in c.distill.terms.items():
    if term.loss not in losses.LOSSES:
      fail(f'distill.terms.{name}.loss', term.loss, 'unknown loss',
           'valid: ' + ', '.join(sorted(losses.LOSSES)))
    if term.adapter and term.adapter not in adapters.ADAPTERS:
      fail(f'distill.terms.{name}.adapter', term.adapter, 'unknown adapter',
           'valid: ' + ', '.join(sorted(adapters.ADAPTERS)) + " (or '' for "
           'none)')
  _check_cross_tokenizer(c)
  _check_teachers(c)
  if text:
    cache_lib.preflight_topk(c)
  d = c.data
  encoder = text and data.encoder_task(c)
  if encoder and d.task == 'classify':
    try:
      data.classify.check_labelled(data.text.source(d))
    except ValueError as e:
      fail('data.name', d.name, str(e), 'pick one of them')
  if text and d.tokenizer == 'hf' and d.tokenizer_path:
    try:  # The teacher's tokenizer of a stage is checked when it is made.
      path = data.hf_tokenizer.source_path(d.tokenizer_path, '')
      if encoder:
        data.mlm.WordPieceTokenizer.load(path)
      else:
        data.text.tokenizer('hf', path=path, vocab_size=d.vocab_size)
    except (ValueError, FileNotFoundError) as e:
      fail('data.tokenizer_path', d.tokenizer_path, str(e),
           'point it at a BERT WordPiece tokenizer.json' if encoder else
           'point it at an HF tokenizer.json that keeps every byte')
  parts = [d.name]
  if text and data.mixed.is_mixed(d.name):
    try:
      parts = data.mixed.parts(d.name)
    except ValueError as e:
      fail('data.name', d.name, str(e).split(': ', 1)[1].split('; ')[0],
           str(e).split('; ')[-1])
  if text and d.name == 'kd_text' and d.get('source_field'):
    _preflight_sources(d, at, fail)
    return
  for part in parts:  # A mixed corpus's sources, each a corpus of its own.
    _preflight_splits(mc.ConfigDict({**d.to_dict(), 'name': part}), text, at,
                      fail)


def _preflight_sources(d, at: str, fail) -> None:
  """Your files with a `data.source_field`: every document names its
  source (`kd.data.corpus.field_values`), and each source's training and
  evaluation splits hold documents."""
  split = d.eval_split.split('[')[0]
  for label, files in zip(data.mixed.labels(d), data.mixed.sources(d)):
    counts = dict(data.text.builder(files, d.data_dir or None).info.metadata[
        'documents'])
    if not counts.get(split, 0):
      fail('data.source_field', d.source_field, f'the source {label!r} of '
           f'your files has no document in the {split} split (documents per '
           f'split: {counts})', f'add documents of {label!r}, or give the '
           f'split files of its own (--config.{at}data.files_{split}=GLOB)')


def _check_teachers(c) -> None:
  """What `distill.teachers` asks of the data and the terms, known before
  any teacher is read: the routing column; teachers of other tokenizers
  routed, not mixed, and one teacher of another tokenizer on one corpus."""
  if not teachers_lib.run_dirs(c.distill):
    if is_cross_tokenizer(c) and data.mixed.is_mixed_data(c.data):
      raise kd_config.ConfigError(
          f'config.distill.teacher.workdir={c.distill.teacher.workdir!r}, '
          f'data.name={c.data.name!r}: the cross-tokenizer terms '
          f'({cross_terms(c)}) pair one teacher\'s tokens of one corpus with '
          "the student's; for a mixed corpus name a teacher per source in "
          "distill.teachers with distill.route_by='source', or train on one "
          'corpus')
    return
  if is_cross_tokenizer(c) and not c.distill.route_by:
    raise kd_config.ConfigError(
        f'config.distill.teachers={c.distill.teachers!r} with cross-tokenizer '
        f'terms ({cross_terms(c)}): a weighted mixture of distributions over '
        'different vocabularies is not defined; route each row to one '
        "teacher (distill.route_by='source' over a mixed corpus), or mix "
        "teachers of the student's tokenizer with forward_kl (or another "
        'divergence)')
  if c.distill.route_by:
    teachers_lib.check_column(c.data.name, c.distill.route_by,
                              data.mixed.is_mixed_data(c.data))


def data_sources(d) -> tuple[str, ...]:
  """The source names of config.data `d`, a mixed corpus
  (`kd.data.mixed.labels`), else ()."""
  return data.mixed.labels(d) if data.mixed.is_mixed_data(d) else ()


def _check_stage_teachers(config, name: str) -> None:
  """A stage routed over teachers that are earlier stages: one teacher per
  source of its data (`kd.teachers.routes`), before those teachers train."""
  d = config.stages[name].distill
  named = teachers_lib.run_dirs(d)
  if d.route_by and named and all(t in config.stages for t in named):
    sources = ([s.strip() for s in d.teacher_sources.split(',') if s.strip()]
               or [config.stages[t].data.name for t in named])
    teachers_lib.routes(config.stages[name].data.name,
                        data_sources(config.stages[name].data), d.route_by,
                        sources, [f'stage {t!r}' for t in named])


def _preflight_splits(d, text: bool, at: str, fail) -> None:
  """config.data `d`'s evaluation split exists and holds examples."""
  b = (data.text.builder(data.text.source(d), d.data_dir or None) if text else
       data.builder(d.name, d.data_dir or None, d.download,
                    d.image_size or None))
  if d.name == 'kd_text':
    counts = dict(b.info.metadata['documents'])
    split = d.eval_split.split('[')[0]
    if not counts.get(split, 1):
      fail('data.eval_split', d.eval_split, f'the {split} split of your files '
           f'holds no document (documents per split: {counts})',
           'add documents, or give the split files of its own '
           f'(--config.{at}data.files_{split}=GLOB)')
  try:
    size = b.info.splits[d.eval_split].num_examples
  except (KeyError, ValueError):
    fail('data.eval_split', d.eval_split, f'{d.name} has no such split',
         f'set --config.{at}data.eval_split to one of '
         f'{", ".join(sorted(b.info.splits))} or a slice such as '
         "'test[:50%]'")
  if not size:
    fail('data.eval_split', d.eval_split, f'that part of {d.name} holds no '
         f'examples', f'set --config.{at}data.eval_split to a split or '
         "slice that holds some, such as 'test'")


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


def teacher_cache(config, workdir, teacher, teacher_vars, teacher_step,
                  terms, example):
  """The teacher-output cache of this run's teacher and training data
  (`kd.cache`): logits and every feature a term reads, built on first use
  in `distill.teacher.cache_dir` (default WORKDIR/teacher_cache)."""
  t = config.distill.teacher
  cache_lib.check_usable(config)
  names = teacher_outputs(teacher, terms, example)
  meta = cache_lib.provenance(config, teacher_step,
                              teacher_vars, teacher_dtype(t.dtype))
  # Variables as an argument, not as constants folded into the program.
  forward = functools.partial(jax.jit(lambda v, x: steps.outputs(
      *teacher.apply(v, x, train=False))), teacher_vars)
  return cache_lib.open_or_build(
      t.cache_dir or os.path.join(workdir, 'teacher_cache'), meta, forward,
      config, names)


def lm_teacher_cache(config, workdir, teacher, teacher_vars, teacher_step,
                     tok):
  """A text run's top-k cache (`kd.cache.build_topk`): the teacher's
  `distill.teacher.cache_topk` largest log-probabilities and its tail mass
  at every token of the rows of `kd.data.text.training_rows` (the fixed
  packing the run then trains on) that its `steps` batches read, stored as
  `distill.teacher.cache_quantize` says."""
  t, d = config.distill.teacher, config.data
  meta = cache_lib.lm_provenance(config, teacher_step, teacher_vars,
                                 teacher_dtype(t.dtype), tok)
  forward = functools.partial(jax.jit(lambda v, x: cache_lib.topk_log_probs(
      teacher.apply(v, x, train=False)[0], t.cache_topk)), teacher_vars)
  cache_dir = t.cache_dir or os.path.join(workdir, 'teacher_cache')
  where = dict(seq_len=d.seq_len, seed=config.seed, tok=tok,
               data_dir=d.data_dir or None)
  name = data.text.source(d)
  build = lambda: cache_lib.build_topk(
      cache_dir, meta, forward, data.text.training_rows(name, **where),
      data.text.rows_read(name, batch_size=config.batch_size,
                          steps=config.steps, **where))
  cache = cache_lib.open_or_build_topk(cache_dir, meta, build)
  print(f'[teacher cache] {cache_dir}: top {cache.k}, {cache.quantize}: '
        f'{cache.sizes["bytes_per_token"]} bytes per token, '
        f'{cache.sizes["bytes_per_stored_logit"]} per stored logit',
        flush=True)
  return cache


# What a mixture of several teachers' top-k caches passes its terms.
MIXED_TOPK = cache_lib.TOPK_OUTPUTS[:2]


def cached_topk_terms(terms, weights=None) -> tuple[steps.Term, ...]:
  """A top-k cache's terms on its outputs: `topk_kl` as `topk_kl_cached`,
  the losses on a cached top k as they are; with the `weights` of several
  teachers' caches mixed, `topk_kl` as `topk_mixture_kl_cached`."""
  if weights is not None:
    return tuple(dataclasses.replace(
        term, loss='topk_mixture_kl_cached', teacher=','.join(MIXED_TOPK),
        kwargs={**{k: v for k, v in term.kwargs.items() if k != 'k'},
                'weights': tuple(weights)}) for term in terms)
  return tuple(dataclasses.replace(
      term, loss='topk_kl_cached' if term.loss == 'topk_kl' else term.loss,
      teacher=','.join(cache_lib.TOPK_OUTPUTS),
      kwargs={k: v for k, v in term.kwargs.items() if k != 'k'})
               for term in terms)


def mesh_shardings(parallel, abstract):
  """Where `parallel='sharded'` puts the leaves of `abstract` on its mesh,
  so that a checkpoint is read straight there (`kd.runs.load_variables`);
  None for data parallelism, which replicates host copies."""
  if isinstance(parallel, sharding.ShardedParallel):
    return parallel.shardings(abstract)
  return None


def read_part(run_dir: str, what: str, parallel, part):
  """(`part(tree, step)`, step) of `run_dir`'s newest readable checkpoint
  `tree`; `part` returns a subtree (the checkpoint's names) and may refuse.
  On the host (the whole checkpoint read, then `part` taken), or under
  `parallel='sharded'` only that part, read straight onto the mesh
  (`kd.runs.read_onto`: `part` sees the metadata first, so it refuses
  before anything is read)."""
  if not isinstance(parallel, sharding.ShardedParallel):
    found, step = runs.latest_state(run_dir, what)
    return part(found, step), step

  def target_of(saved, step):
    wanted = part(saved, step)
    return runs.on_devices(wanted, parallel.shardings(wanted))

  return runs.read_onto(run_dir, what, target_of)


def warm_start(state, run_dir: str, name: str, layers: str = '',
               parallel=None):
  """`state` with the student (parameters and model state) and every
  adapter of the same term name and shapes taken from `run_dir`'s last
  checkpoint: how a pre-training stage (FitNets, FT's paraphraser, AB's
  connectors) hands its result to the next. Optimizer state starts fresh.
  `layers='strided'`: `run_dir` holds a deeper language model of the same
  width (the teacher), and the student takes its embedding, final norm and
  every k-th layer (DistilBERT, Sanh et al. 2019); a converted Hugging Face
  teacher (`python -m kd.convert --from=hf`) is such a run. Under
  `parallel='sharded'` only what is taken is read, straight onto the mesh
  (`read_part`)."""
  what = f'[{name}] init_from'
  if layers == 'strided':
    seen = {}

    def strided(tree, step):
      del step
      t_params = tree['params']
      names = lm.layer_names(t_params)
      seen['map'] = lm.strided_layer_map(len(names),
                                         len(lm.layer_names(state.params)))
      seen['teacher'] = t_params
      jax.eval_shape(functools.partial(  # Refuses another shape early.
          lm.init_from_teacher_layers, layer_map=seen['map']),
                     t_params, state.params)
      used = {names[j] for j in seen['map']}
      return {'params': {k: v for k, v in t_params.items()
                         if k not in names or k in used}}

    found, step = read_part(run_dir, what, parallel, strided)
    # The layers left unread are never copied.
    params = lm.init_from_teacher_layers(
        {**seen['teacher'], **found['params']}, state.params, seen['map'])
    print(f'[{name}] initialised from {run_dir} (step {step}): teacher '
          f'layers {seen["map"]}')
    return state.replace(params=params)
  if layers:
    raise kd_config.ConfigError(f"config.init_from_layers={layers!r}; valid: '' (the "
                     "same architecture) or 'strided'")

  fresh = []

  def same(tree, step):
    # A classifier fine-tuned from a masked-LM run: its heads differ.
    params = encoder.fit_heads(tree['params'], state.params)
    fresh.extend(k for k in params if k not in tree['params'])
    checkpoint.check_same_structure(
        {'params': state.params, **state.model_state},
        {'params': params, **tree['model_state']},
        f'init_from run {run_dir} (step {step})')
    aux = state.aux_params
    return {'params': {k: v for k, v in params.items() if k not in fresh},
            'model_state': tree['model_state'],
            'aux_params': {k: v for k, v in tree.get('aux_params', {}).items()
                           if k in aux and checkpoint.flat_shapes(v) ==
                           checkpoint.flat_shapes(aux[k])}}

  found, step = read_part(run_dir, what, parallel, same)
  taken = list(found['aux_params'])
  print(f'[{name}] initialised from {run_dir} (step {step}): the student'
        + ''.join(f', adapter {k!r}' for k in taken)
        + (f' (new: {", ".join(fresh)})' if fresh else ''))
  return state.replace(params={**found['params'],
                               **{k: state.params[k] for k in fresh}},
                       model_state=dict(found['model_state']),
                       aux_params={**state.aux_params, **found['aux_params']})


# The metrics row of a test (bits per byte: a text run's).
TEST_ROW = ('test_accuracy', 'test_loss', 'test_bits_per_byte')


class Built(NamedTuple):
  """A run's data spec, devices, models and initial train state."""
  spec: Any
  parallel: DataParallel
  model: Any
  example: np.ndarray
  tx: Any
  lr_schedule: Any
  teacher: Any  # None for a supervised run.
  terms: tuple
  state: steps.TrainState
  tok: Any = None  # A text dataset's tokenizer.
  # The teacher's, where it differs (kd.data.paired); of routed teachers
  # of several tokenizers, one per source (None: the student's).
  teacher_tok: Any = None


def build(config: mc.ConfigDict, workdir: str, name: str) -> Built:
  """Data spec, models and train state (warm-started from
  `config.init_from`), failing early on a bad batch size or term."""
  d, t = config.data, config.distill.teacher
  text = data.text.is_text(d.name)
  tok = (data.run_tokenizer(config, workdir,
                            from_teacher=not is_cross_tokenizer(config))
         if text else None)
  several = teachers_lib.run_dirs(config.distill)
  t_toks = (other_tokenizers(config, tok) if several and text
            and is_cross_tokenizer(config) else None)
  t_tok = (cross_tokenizer_teacher(config, tok) if text and not several
           else None)
  spec = data.run_spec(config, tok)
  if text and d.task == 'classify':
    classes = data.classify.classes(data.text.source(d), d.data_dir or None)
    if len(classes) != spec.num_classes:
      raise kd_config.ConfigError(
          f'config.model.kwargs.num_labels={spec.num_classes} but '
          f'{d.name} has {len(classes)} classes ({", ".join(classes)}): set '
          f'it to {len(classes)}')
  if text and data.encoder_task(config):
    for field, kw in (('model.kwargs', config.model.kwargs),
                      ('distill.teacher.kwargs', t.kwargs if t.workdir
                       else {'pad_id': tok.pad_id})):
      if kw.get('pad_id', -1) != tok.pad_id:
        raise kd_config.ConfigError(
            f'config.{field}.pad_id={kw.get("pad_id", -1)} but the '
            f'tokenizer pads with id {tok.pad_id}: set it to {tok.pad_id} '
            '(the encoder masks its padding by this id)')
  if t.cache and t.model_shards > 1:
    raise kd_config.ConfigError('distill.teacher.cache builds on one device; with '
                     'model_shards > 1 keep the teacher live (cache=False)')
  parallel = sharding.create(config)
  parallel.check_batch_size(config.batch_size)  # Fails early on a bad size.
  model = models.from_config(config.model.name, config.model.kwargs,
                             spec.num_classes, config.dtype)
  example = np.zeros((1, *spec.input_shape), spec.input_dtype)
  tx, lr_schedule = optim.create(config.optimizer, config.steps)
  teacher = None
  terms, aux_params, aux_state = (), {}, {}
  if t.workdir or several:
    teacher = (lm_teachers(config, spec, tok, t_toks) if several else
               models.from_config(
                   t.model, t.kwargs,
                   t_tok.vocab_size if t_tok else spec.num_classes,
                   teacher_dtype(t.dtype)))
    one = teacher.models if several else (teacher,)
    across = t_toks or (t_tok,) * len(one)  # Per teacher: another's or None.
    for t_dir, m, other in zip(several or (t.workdir,), one, across):
      t_len, field = ((data.paired.teacher_seq_len(config), 'teacher_seq_len')
                      if other is not None else (d.seq_len, 'seq_len'))
      context = getattr(m, 'max_len', None)  # A language model's.
      if text and context and t_len > context:
        raise kd_config.ConfigError(
            f'config.data.{field}={t_len} exceeds the teacher\'s context '
            f'length (max_len={context}, the teacher in {t_dir}): it cannot '
            f'read sequences that long; set --config.data.{field} to '
            f'{context} or less, or distill from a teacher of a longer '
            'context')
    terms = distill_terms(config)
    if t_tok is not None:
      terms = with_vocab_map(terms, tok, t_tok)
    if t_toks:  # Each teacher with the terms that read it.
      for group_terms, m in routed_terms(terms, one, t_toks):
        check_terms(group_terms, model, m, example)
    else:
      check_terms(terms, model, one[0], example)
    if text and t.cache:
      terms = cached_topk_terms(terms, None if not several or teacher.routes
                                else teacher.weights)
    aux_params, aux_state = init_adapters(
        terms, model, one[0], example, jax.random.key(config.seed + 1),
        0 if text else data.num_examples(d.name, 'train', d.data_dir or None,
                                         d.download, d.image_size or None))
  elif len(config.distill.terms):
    raise kd_config.ConfigError('config.distill.terms is set but no teacher is: set '
                     'config.distill.teacher.workdir (and .model)')
  state = steps.create_state(model, tx, jax.random.key(config.seed), example,
                             aux_params, aux_state)
  if config.init_from:
    state = warm_start(state, config.init_from, name,
                       config.init_from_layers, parallel)
  if t_toks:  # The data pairs each row with its teacher's tokens.
    t_tok = tuple(t_toks[k] for k in teacher.routes)
  return Built(spec, parallel, model, example, tx, lr_schedule, teacher,
               terms, state, tok, t_tok)


def cross_terms(config) -> str:
  """The terms of `config` that compare two tokenizations (losses of input
  kind 'aligned', `kd.losses.cross_tokenizer`), as 'name (loss), ...';
  '' if none."""
  return ', '.join(f'{k} ({t.loss})' for k, t in config.distill.terms.items()
                   if t.loss in losses.LOSSES
                   and losses.spec(t.loss).inputs == 'aligned')


def is_cross_tokenizer(config) -> bool:
  return bool(cross_terms(config))


def _check_cross_tokenizer(c) -> None:
  """A cross-tokenizer run's teacher reads its own tokens of each training
  row, live: refuses what reads or makes one tokenization only."""
  for on, field in ((c.distill.teacher.cache, 'distill.teacher.cache'),
                    (c.distill.teacher.model_shards > 1,
                     'distill.teacher.model_shards'),
                    (c.distill.on_policy.lmbda, 'distill.on_policy.lmbda'),
                    (c.distill.seqkd.prompt_len, 'distill.seqkd.prompt_len')):
    if on and is_cross_tokenizer(c):
      raise kd_config.ConfigError(
          f'config.{field} is set, but the cross-tokenizer terms '
          f'{cross_terms(c)} feed the teacher its own tokens of each row: '
          'reset it (a live teacher on every device, off-policy data)')
  for name, t in c.distill.terms.items():
    if t.kwargs.get('chunk_size') and t.loss in losses.LOSSES and (
        'spans' in inspect.signature(losses.spec(t.loss).fn).parameters):
      raise kd_config.ConfigError(
          f'config.distill.terms.{name}.kwargs.chunk_size='
          f'{t.kwargs.chunk_size}: {t.loss} reads whole spans of positions, '
          'which chunks would cut; remove chunk_size')


def cross_tokenizer_teacher(config, tok):
  """The teacher's tokenizer of a cross-tokenizer run, else None; refuses
  one that is the student's."""
  if not is_cross_tokenizer(config):
    return None
  t = config.distill.teacher
  runs.check_teacher(t.workdir, t.allow_unfinished_teacher)
  t_config = runs.load_config(t.workdir)
  t_tok = data.run_tokenizer(t_config, t.workdir)
  kinds = (t_config.data.tokenizer, config.data.tokenizer)
  if kinds[0] == kinds[1] and (kinds[0] == 'byte' or
                               t_tok.to_str() == tok.to_str()):
    raise same_tokenizer_error(config, t.workdir, kinds[0],
                               f' of {tok.vocab_size} tokens')
  return t_tok


def with_vocab_map(terms, tok, teacher_tok) -> tuple[steps.Term, ...]:
  """`terms` with the vocabulary map (`kd.data.align.vocab_map`) in the
  arguments of those that take it."""
  matched = data.align.vocab_map(tok, teacher_tok)
  return tuple(teachers_lib.with_vocab_map(term, matched) for term in terms)


def other_tokenizers(config, tok) -> tuple:
  """Per teacher of `distill.teachers` in a run with cross-tokenizer
  terms: its tokenizer where it is not the student's, else None. Refuses,
  naming both sides and the fix, terms that no teacher reads and teachers
  that no term reads."""
  d = config.distill
  dirs = teachers_lib.run_dirs(d)
  out, kinds = [], []
  for t_dir in dirs:
    runs.check_teacher(t_dir, d.teacher.allow_unfinished_teacher)
    t_config = runs.load_config(t_dir)
    t_tok = data.run_tokenizer(t_config, t_dir)
    kind = t_config.data.tokenizer
    same = kind == config.data.tokenizer and (
        kind == 'byte' or t_tok.to_str() == tok.to_str())
    out.append(None if same else t_tok)
    kinds.append(f'{kind} of {t_tok.vocab_size} tokens')
  plain = ', '.join(f'{k} ({t.loss})' for k, t in d.terms.items()
                    if losses.spec(t.loss).inputs != 'aligned')
  ours = f'{config.data.tokenizer} of {tok.vocab_size} tokens'
  if all(t is None for t in out):
    raise same_tokenizer_error(
        config, 'every one of distill.teachers: ' + ', '.join(dirs),
        config.data.tokenizer, f' of {tok.vocab_size} tokens')
  for t_dir, t_tok in zip(dirs, out):
    if t_tok is None and not plain:
      raise kd_config.ConfigError(
          f'the teacher ({t_dir}) reads the student\'s tokenizer ({ours}), '
          f'but every term of distill.terms ({cross_terms(config)}) compares '
          'two tokenizations: add a term over one vocabulary for it (e.g. '
          "distill.terms.kl with loss='forward_kl')")
  if plain and all(t is not None for t in out):
    raise kd_config.ConfigError(
        f'config.distill.terms {plain} compare the student with a teacher of '
        'its vocabulary, but every teacher of distill.teachers reads another '
        'tokenizer (' + ', '.join(f'{t_dir}: {k}' for t_dir, k in zip(
            dirs, kinds)) + f'; the student {ours}): remove them, or make '
        "them cross-tokenizer terms (loss='uld' or 'hybrid_kl')")
  return tuple(out)


def routed_terms(terms, models_, t_toks):
  """(terms, model) per teacher of `t_toks` (`other_tokenizers`): a
  teacher of another tokenizer with the cross-tokenizer terms, one of the
  student's with the others (`kd.teachers.Teachers.groups`)."""
  for m, t_tok in zip(models_, t_toks):
    yield tuple(t for t in terms if (losses.spec(t.loss).inputs == 'aligned')
                == (t_tok is not None)), m


def lm_teachers(config, spec, tok, t_toks=None) -> teachers_lib.Teachers:
  """`config.distill.teachers` as one teacher (`kd.teachers`), checked
  before any work: each run finished and of the student's tokens (or with
  `t_toks`, `other_tokenizers`: routed, each of the tokenizer there), and,
  when routing, one teacher per source of the data."""
  d = config.distill
  dirs = teachers_lib.run_dirs(d)
  configs = []
  for t_dir in dirs:
    runs.check_teacher(t_dir, d.teacher.allow_unfinished_teacher)
    if t_toks is None:
      check_same_tokens(config, tok, t_dir, across=False)
    configs.append(runs.load_config(t_dir))
  routes = ()
  if d.route_by:
    sources = ([s.strip() for s in d.teacher_sources.split(',') if s.strip()]
               or [c.data.name for c in configs])
    routes = teachers_lib.routes(config.data.name, data_sources(config.data),
                                 d.route_by, sources, dirs)
  weights = teachers_lib.numbers(d.teacher_weights) or (1.0,) * len(dirs)
  temperatures = {float(term.kwargs.get('temperature', 1.0))
                  for term in d.terms.values()}
  t_toks = t_toks or (None,) * len(dirs)
  return teachers_lib.Teachers(
      tuple(models.from_config(c.model.name, c.model.kwargs,
                               k.vocab_size if k else spec.num_classes,
                               teacher_dtype(d.teacher.dtype))
            for c, k in zip(configs, t_toks)),
      teachers_lib.normalised(weights),
      temperatures.pop() if len(temperatures) == 1 else 1.0, routes,
      d.route_by, tuple(None if k is None else data.align.vocab_map(tok, k)
                        for k in t_toks)
      if any(k is not None for k in t_toks) else ())


def check_same_tokens(config, tok, t_dir: str = '', across: bool = True
                      ) -> None:
  """A student learns the teacher's next-token (or masked-token)
  distributions: over the same vocabulary, from the same tokenizer (the
  teacher of `t_dir`, default distill.teacher.workdir; `across`: the fix
  may be a cross-tokenizer term, which one teacher alone can take)."""
  t_dir = t_dir or config.distill.teacher.workdir
  t_config = runs.load_config(t_dir)
  t_tok = data.run_tokenizer(t_config, t_dir)
  kinds = (t_config.data.tokenizer, config.data.tokenizer)
  sizes = ((t_config.data.vocab_size, config.data.vocab_size)
           if data.encoder_task(config) else
           (t_tok.vocab_size, tok.vocab_size))
  fix = ('use the teacher\'s tokenizer: set config.data.tokenizer='
         f'{kinds[0]!r} (and data.vocab_size={sizes[0]})' + (
             ", or distill across tokenizers with a 'uld' or 'hybrid_kl' "
             'term' if across else ', or route the teachers (distill.'
             "route_by='source') with a 'uld' or 'hybrid_kl' term for those "
             'of another tokenizer'))
  # An encoder student may name a converted teacher's WordPiece 'hf'.
  if sizes[0] != sizes[1] or (kinds[0] != kinds[1]
                              and not data.encoder_task(config)):
    raise kd_config.ConfigError(
        f'the teacher ({t_dir}) reads a vocabulary of {sizes[0]} '
        f'tokens ({kinds[0]}), the student {sizes[1]} ({kinds[1]}): '
        f'{fix}')
  ids = lambda t: (getattr(t, 'bos_id', None), getattr(t, 'eos_id', None))
  if kinds[0] != 'byte' and (t_tok.to_str() != tok.to_str()
                             or ids(t_tok) != ids(tok)):
    raise kd_config.ConfigError(f'the teacher ({t_dir}) and the student have different '
                     f'{kinds[0].upper()} tokenizer files of {tok.vocab_size} tokens: {fix}, '
                     'in a new run directory (its tokenizer.json is copied '
                     'from the teacher)')


class TeacherSource(NamedTuple):
  """Where a distillation step gets the teacher from: its frozen variables
  passed as data (`train_extra`, and `eval_extra` for evaluation), or its
  outputs put in each batch, read from a cache (`extend_batch`) or computed
  by a teacher split over the mesh's model axis (`with_teacher`). `model`
  runs with `variables` (batch norms folded: `distill.teacher.fold_bn`)."""
  variables: Any = None
  step: int | None = None  # The teacher checkpoint's.
  eval_extra: tuple = ()
  train_extra: tuple = ()
  extend_batch: Callable | None = None
  with_teacher: Callable | None = None
  seqkd_dir: str = ''  # Training data: the teacher's generations (kd.seqkd).
  model: Any = None
  # A top-k cache's bytes_per_token and bytes_per_stored_logit.
  cache_sizes: dict | None = None


def teacher_source(config, workdir: str, b: Built) -> TeacherSource:
  if b.teacher is None:
    return TeacherSource()
  t = config.distill.teacher
  if isinstance(b.teacher, teachers_lib.Teachers):
    return several_teachers(config, workdir, b)
  if b.tok is not None and b.teacher_tok is None:
    runs.check_teacher(t.workdir, t.allow_unfinished_teacher)
    check_same_tokens(config, b.tok)
  abstract = jax.eval_shape(lambda: b.teacher.init(
      jax.random.key(0), b.example, train=False))
  # A cache's digest and a batch-norm fold compute from host values (and
  # a cache is built on one device): such a teacher is read to the host.
  on_host = t.cache or (t.fold_bn and 'batch_stats' in abstract)
  variables, step = runs.load_teacher(
      t.workdir, abstract, t.allow_unfinished_teacher,
      None if on_host else mesh_shardings(b.parallel, abstract))
  seqkd_dir = seqkd_data(config, workdir) if b.tok is not None else ''
  if t.model_shards > 1:
    return TeacherSource(variables, step, with_teacher=sharded_teacher(
        b.parallel, b.teacher, variables, b.terms, b.example), model=b.teacher)
  if t.cache:
    extra = (b.parallel.replicate(variables),)
    cache = (lm_teacher_cache(config, workdir, b.teacher, variables, step,
                              b.tok) if b.tok is not None else
             teacher_cache(config, workdir, b.teacher, variables, step,
                           b.terms, b.example))
    return TeacherSource(variables, step, extra, extend_batch=lambda batch: {
        **batch, 'teacher': cache.lookup(batch['index'])}, model=b.teacher,
                         cache_sizes=getattr(cache, 'sizes', None))
  teacher = b.teacher
  if t.fold_bn:
    teacher, variables = fold.fold_batch_norms(teacher, variables, b.example)
  extra = (b.parallel.replicate(variables),)
  # A teacher of another tokenizer reads other tokens than the test's.
  return TeacherSource(variables, step, () if b.teacher_tok else extra,
                       extra, seqkd_dir=seqkd_dir, model=teacher)


def several_teachers(config, workdir: str, b: Built) -> TeacherSource:
  """The variables of `config.distill.teachers`, each read as a single
  teacher's are (onto the mesh under parallel='sharded'; to the host for
  a cache's digest), passed to the step as one tuple, or with
  `distill.teacher.cache` their top-k caches (`teachers_caches`);
  `step` lists their checkpoints' steps."""
  loaded = []
  for t_dir, m in zip(teachers_lib.run_dirs(config.distill), b.teacher.models):
    abstract = jax.eval_shape(lambda m=m: m.init(jax.random.key(0), b.example,
                                                 train=False))
    loaded.append(runs.load_teacher(
        t_dir, abstract, config.distill.teacher.allow_unfinished_teacher,
        None if config.distill.teacher.cache else
        mesh_shardings(b.parallel, abstract)))
  variables = tuple(v for v, _ in loaded)
  extra = (b.parallel.replicate(variables),)
  t_steps = [s for _, s in loaded]
  if config.distill.teacher.cache:
    return TeacherSource(variables, t_steps, extra, model=b.teacher,
                         extend_batch=teachers_caches(config, workdir, b,
                                                    variables, t_steps))
  # Teachers of other tokenizers read other tokens than the test's.
  return TeacherSource(variables, t_steps, () if b.teacher.across else extra,
                       extra, model=b.teacher)


def teachers_caches(config, workdir: str, b: Built, variables, t_steps):
  """Each teacher's top-k cache (`kd.cache.build_topk`, as a single
  teacher's) of the rows the run reads (routed: of its sources only), in
  `distill.teacher.cache_dir`/k (default WORKDIR/teacher_cache/k); returns
  `extend_batch`: batch['teacher'] = routed, each row's teacher's cached
  top k; a mixture, every teacher's top k side by side ([..., K k] values
  and indices, which `topk_mixture_kl_cached` reads)."""
  t, d = config.distill.teacher, config.data
  where = dict(seq_len=d.seq_len, seed=config.seed, tok=b.tok,
               data_dir=d.data_dir or None)
  read_by = dict(batch_size=config.batch_size, steps=config.steps, **where)
  if data.mixed.is_mixed_data(d):
    mix = data.mixed.sources(d)
    rows, source = data.mixed.training_rows(mix, **where)
    read = data.mixed.rows_read(mix, **read_by)
  else:
    rows = data.text.training_rows(data.text.source(d), **where)
    read = data.text.rows_read(data.text.source(d), **read_by)
  routes = np.asarray(b.teacher.routes) if b.teacher.routes else None
  caches = []
  for k, t_dir in enumerate(teachers_lib.run_dirs(config.distill)):
    m = runs.load_config(t_dir).model
    c = mc.ConfigDict(config.to_dict())  # The provenance of one teacher.
    c.distill.teacher.update(workdir=t_dir, model=m.name, kwargs=m.kwargs)
    meta = cache_lib.lm_provenance(c, t_steps[k], variables[k],
                                   teacher_dtype(t.dtype), b.tok)
    forward = functools.partial(jax.jit(
        lambda v, x, m=b.teacher.models[k]: cache_lib.topk_log_probs(
            m.apply(v, x, train=False)[0], t.cache_topk)), variables[k])
    cache_dir = os.path.join(t.cache_dir or os.path.join(
        workdir, 'teacher_cache'), str(k))
    mine = read if routes is None else read[routes[source[read]] == k]
    caches.append(cache_lib.open_or_build_topk(
        cache_dir, meta, functools.partial(cache_lib.build_topk, cache_dir,
                                           meta, forward, rows, mine)))
    print(f'[teacher cache] {cache_dir} ({t_dir}): {len(mine)} rows, top '
          f'{caches[-1].k}, {caches[-1].quantize}', flush=True)

  def side_by_side(batch):
    looked = [cache.lookup(np.asarray(batch['index'])) for cache in caches]
    return {**batch, 'teacher': {name: np.concatenate(
        [x[name] for x in looked], -1) for name in MIXED_TOPK}}

  def routed(batch):
    index, which = np.asarray(batch['index']), routes[np.asarray(
        batch['source'])]
    out = {}
    for k, cache in enumerate(caches):
      picked = np.flatnonzero(which == k)
      if len(picked):
        for name, v in cache.lookup(index[picked]).items():
          out.setdefault(name, np.zeros((len(index), *v.shape[1:]),
                                        v.dtype))[picked] = v
    return {**batch, 'teacher': out}

  return side_by_side if routes is None else routed


def seqkd_data(config, workdir: str) -> str:
  """The directory of the teacher's generations this run trains on
  (generated on first use), or '' without sequence-level KD."""
  s = config.distill.seqkd
  if not s.prompt_len:
    return ''
  out_dir = s.dir or os.path.join(workdir, 'seqkd')
  seqkd.build(config.distill.teacher.workdir, out_dir,
              seq_len=config.data.seq_len, prompt_len=s.prompt_len,
              temperature=s.temperature, top_k=s.top_k, seed=config.seed,
              num_prompts=s.num_prompts, batch_size=s.batch_size,
              dataset=data.text.source(config.data),
              data_dir=config.data.data_dir or None)
  return out_dir


def run_values(config) -> dict:
  """The numbers of `config` in which runs trained together may differ
  (`kd.vectorize`): seed, peak learning rate, mixup alpha, cross-entropy
  weight, and each term's weight and temperature."""
  return {'seed': config.seed, 'lr': config.optimizer.lr,
          'mixup_alpha': config.mixup_alpha,
          'ce_weight': config.distill.ce_weight,
          'terms': {name: {k: t[k] if k == 'weight' else t.kwargs[k]
                           for k in ('weight', 'temperature')
                           if k == 'weight' or k in t.kwargs}
                    for name, t in config.distill.terms.items()}}


def with_values(terms, values: dict) -> tuple[steps.Term, ...]:
  """`terms` with the weights and temperatures of `run_values(...)['terms']`."""
  return tuple(dataclasses.replace(
      term, weight=values[term.name]['weight'],
      kwargs={**term.kwargs, **{k: v for k, v in values[term.name].items()
                                if k != 'weight'}}) for term in terms)


def train_step(config, b: Built, src: TeacherSource, v: dict,
               teacher_in_batch: bool = False) -> Callable:
  """The per-shard training step of `config` (one batch) with the numbers
  `v` (`run_values`: the config's own, or one run's traced entry in a
  group trained together); with `teacher_in_batch`, a distillation step
  reads the teacher's outputs from `batch['teacher']`."""
  tx, _ = optim.create(config.optimizer, config.steps, lr=v['lr'])
  mixup_alpha = v['mixup_alpha'] if config.mixup_alpha else 0.0
  if b.teacher is not None:
    live = src.train_extra and not teacher_in_batch
    return steps.make_distill_step(
        b.model, src.model if live else None, tx,
        with_values(b.terms, v['terms']), v['ce_weight'],
        config.label_smoothing, v['seed'], mixup_alpha,
        config.distill.quantization_aware, on_policy(config, b))
  return steps.make_supervised_step(b.model, tx, config.label_smoothing,
                                    v['seed'], mixup_alpha,
                                    config.distill.quantization_aware)


def compile_steps(config, b: Built, src: TeacherSource, group_values=None,
                  stream_of=None):
  """(train step, eval step), compiled for `b.parallel`. The train step
  runs `config.steps_per_dispatch` steps per call (`kd.steps.multi_step`);
  with `group_values` (`run_values` of runs trained together, stacked on a
  leading run axis) it trains them all (`kd.steps.vectorized`), reading
  the batches of the distinct streams `stream_of` names; a live teacher
  then runs once per distinct batch (not under mixup, where each run mixes
  its own)."""
  if group_values is None:
    step = train_step(config, b, src, run_values(config))
  else:
    # Several teachers read the batch itself (routing): each run's step.
    shared = (b.teacher is not None and bool(src.train_extra)
              and not config.mixup_alpha
              and not isinstance(b.teacher, teachers_lib.Teachers))
    forward = (lambda v, x: steps.outputs(*src.model.apply(
        v, x, train=False))) if shared else None
    step = steps.vectorized(
        lambda v: train_step(config, b, src, v, teacher_in_batch=shared),
        group_values, stream_of, forward)
  k = config.steps_per_dispatch
  train = b.parallel.wrap(steps.multi_step(step, k),
                          num_replicated=1 + len(src.train_extra),
                          lead=int(k > 1) + int(group_values is not None))
  eval_fn = b.parallel.wrap(
      steps.make_eval_step(b.model, src.model if src.eval_extra else None),
      1 + len(src.eval_extra), donate_first=False)
  if src.with_teacher is not None:
    return src.with_teacher(train), src.with_teacher(eval_fn)
  return train, eval_fn


def on_policy(config, b: Built):
  """(lmbda, sampler) of on-policy distillation, or None (off-policy)."""
  o = config.distill.on_policy
  if not o.lmbda:
    return None
  return o.lmbda, functools.partial(
      sampling.on_policy_batch, b.model, prompt_len=o.prompt_len,
      temperature=o.temperature, top_k=o.top_k, pad_id=b.tok.pad_id,
      eos_id=b.tok.eos_id)


def tester(config, b: Built, src: TeacherSource, eval_fn) -> Callable:
  """`test(p_state)`: the test figures of a replicated train state."""
  batches = select.test_split(config, b.tok)

  sources = data_sources(config.data)

  def test(p_state) -> dict:
    variables = {'params': p_state.params, **p_state.model_state}
    return metrics.test_rates(eval_fn, b.parallel, (variables, *src.eval_extra),
                             batches(), sources)

  return test


def train_from_checkpoint(config, workdir: str, name: str, b: Built,
                          src: TeacherSource, logger: MetricLogger,
                          later_steps: int = 0) -> loop.Trained:
  """Trains from `workdir`'s last checkpoint (or `b.state`) to the end and
  tests: every `eval_every` steps and at the end."""
  mngr, state = loop.restore(config, workdir, b.state, name)
  train_step, eval_fn = compile_steps(config, b, src)
  test = tester(config, b, src, eval_fn)
  batches = select.train_batches(config, b.parallel, int(state.step), b.tok,
                                 src.seqkd_dir, b.teacher_tok)
  if src.extend_batch is not None:
    batches = map(src.extend_batch, batches)
  # The run is accepted: its config is recorded before the first step.
  runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  return loop.run(config, name, b.parallel, mngr, logger, state, train_step,
                  src.train_extra, test, batches, b.lr_schedule,
                  logged=TEST_ROW, later_steps=later_steps)


def finish(config, workdir: str, name: str, b: Built, src: TeacherSource,
           trained: loop.Trained, logger: MetricLogger) -> dict:
  """The summary (test figures, latency, exports), written and returned."""
  state = b.parallel.unreplicate(trained.p_state)
  variables = {'params': state.params, **state.model_state}
  summary = {'steps': config.steps,
             'params': float(metrics.count_params(state.params)),
             'train_seconds': trained.seconds, **trained.final,
             **trained.best.summary()}
  if b.teacher is not None:
    summary['teacher_step'] = src.step
  for key, value in (src.cache_sizes or {}).items():
    summary[f'teacher_cache_{key}'] = value
  if config.evaluate.latency:
    shape, dtype = b.spec.input_shape, b.spec.input_dtype
    summary['latency_ms'] = latency.model_latency_ms(b.model, variables,
                                                      shape, dtype)
    if b.teacher is not None and not getattr(src.model, 'across', False):
      summary['teacher_latency_ms'] = latency.model_latency_ms(
          src.model, src.variables, shape, dtype)
  exported = []
  if config.export.formats and jax.process_index() == 0:
    summary.update(export_student(config, workdir, b, variables))
    exported = [os.path.join(workdir, f'student_{fmt}.tflite')
                for fmt in config.export.formats]
  logger.summary(summary)
  logger.close()
  runs.write_json(os.path.join(workdir, 'summary.json'), summary)
  loop.print_done(name, workdir, exported)
  return summary


def train_and_evaluate(config: mc.ConfigDict, workdir: str,
                       name: str = 'train', later_steps: int = 0) -> dict:
  """Runs `config` in `workdir`, resuming from its checkpoints; returns the
  run's summary (also written to `workdir/summary.json`). The directory is
  locked meanwhile and must hold no run of another config (`kd.runs`).
  `later_steps`: the steps of later pipeline stages, for the ETA."""
  kd_config.validate(config)
  preflight(config)
  with runs.accepted(workdir, config, name) as done:
    if done is not None:
      return done
    b = build(config, workdir, name)
    src = teacher_source(config, workdir, b)
    logger = MetricLogger(workdir, config)
    trained = train_from_checkpoint(config, workdir, name, b, src, logger,
                                    later_steps)
    return finish(config, workdir, name, b, src, trained, logger)


def export_student(config, workdir, b: Built, variables) -> dict:
  """Writes `student_<format>.tflite` (+ .json) files; returns their figures
  as summary entries `tflite_<format>_<figure>`. A language model's file
  has prefill and decode signatures (`kd.export.lm`)."""
  # The exporter (TensorFlow) loads only when a run exports.
  from kd.export import lm as lm_export  # pylint: disable=import-outside-toplevel
  from kd.export import student  # pylint: disable=import-outside-toplevel
  out = {}
  for fmt in config.export.formats:
    path = os.path.join(workdir, f'student_{fmt}.tflite')
    quantize = 'none' if fmt == 'float32' else fmt
    if b.tok is not None:
      side = lm_export.export(
          lm_export.LMRun(workdir, config, b.model, variables, config.steps,
                          b.tok), path, quantize=quantize,
          new_tokens=min(64, config.data.seq_len // 2),
          speed=config.evaluate.latency)
      bpb = side['bits_per_byte']
      out.update({f'tflite_{fmt}_bytes': float(side['bytes']),
                  f'tflite_{fmt}_bits_per_byte': bpb['litert'],
                  f'tflite_{fmt}_jax_bits_per_byte': bpb['jax_float32'],
                  f'tflite_{fmt}_greedy_sequences_equal': float(
                      side['parity']['greedy_sequences_equal'])})
      continue
    side = student.export(
        config, b.model, variables, path, quantize=quantize,
        step=config.steps, latency=config.evaluate.latency)
    out.update({f'tflite_{fmt}_accuracy': side['tflite_accuracy'],
                f'tflite_{fmt}_bytes': float(side['bytes']),
                f'tflite_{fmt}_max_abs_logit_diff': side['max_abs_diff_vs_jax'],
                f'tflite_{fmt}_agreement_with_jax': side['agreement_with_jax']})
    if 'latency_ms' in side:
      out[f'tflite_{fmt}_latency_ms'] = side['latency_ms']['tflite_batch1']
  return out
