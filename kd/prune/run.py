"""A prune run: `config.prune.source`'s last checkpoint pruned to
`config.prune.width` / `.depth` and written as a run directory that
`init_from` (or a teacher) reads. Everything is checked before the
source is read; the summary is written last, so a killed run reruns."""
import itertools
import json
import os
import shutil

import jax
import ml_collections as mc
import numpy as np

from kd import checkpoint
from kd import config as kd_config
from kd import data
from kd import metrics
from kd import models
from kd import prune
from kd import runs
from kd import sharding
from kd import steps
from kd.prune import targets
from kd.data import select


def is_prune_run(config) -> bool:
  return bool(config.get('prune', {}).get('source'))


def run_config(source: str, width: str, depth: str, calibration_batches: int,
               calibration_data: str = '') -> mc.ConfigDict:
  """The config of a run pruning `source` (a finished run directory): the
  source's, with the pruned model, zero steps and `prune` set."""
  c = runs.load_config(source)
  check_source_model(c, source)
  with c.unlocked():
    c.model.kwargs = mc.ConfigDict(prune.pruned_kwargs(
        c.model.name, c.model.kwargs.to_dict(), width, depth))
    c.steps = 0
    c.init_from, c.init_from_layers = '', ''
    c.distill = kd_config.run_config().distill  # A pruned model, no teacher.
    c.export.formats = ()
    c.prune = mc.ConfigDict(dict(
        source=os.path.abspath(source), width=width, depth=depth,
        calibration_batches=calibration_batches))
    if calibration_data:
      c.data.name = calibration_data
  return c


def check_source_model(source_config, source: str) -> None:
  name = source_config.model.name
  if name not in prune.MODELS:
    raise kd_config.ConfigError(
        f'{source} holds a {name!r}; kd.prune prunes {prune.MODELS_TEXT}')


def check(config) -> mc.ConfigDict:
  """The source's config, after refusing a prune run that cannot work: a
  source that is not a finished run, a model other than the pruned one, or
  calibration data of another tokenizer."""
  source = config.prune.source
  if not os.path.isdir(os.path.join(source, 'checkpoints')):
    raise kd_config.ConfigError(
        f'config.prune.source={source!r} holds no checkpoints: give a '
        'finished kd run directory (or an earlier pipeline stage)')
  s = runs.load_config(source)
  check_against(config, s, source)
  return s


def check_against(config, s, source: str, at: str = '') -> None:
  """Refuses prune run `config` of the source of config `s`: another
  model, kwargs other than the pruned ones, steps, or another tokenizer."""
  p = config.prune
  check_source_model(s, source)
  try:
    want = prune.pruned_kwargs(s.model.name, s.model.kwargs.to_dict(),
                               p.width, p.depth)
  except ValueError as e:
    raise kd_config.ConfigError(f'config.{at}prune: {e}') from None
  have = config.model.kwargs.to_dict()
  if config.model.name != s.model.name or _plain(have) != _plain(want):
    raise kd_config.ConfigError(
        f'config.{at}model is {config.model.name} {have}, but {source} '
        f'pruned to width {p.width!r}, depth {p.depth!r} is {s.model.name} '
        f'{want}: set config.{at}model.kwargs to that '
        '(kd.prune.pruned_kwargs computes it)')
  if config.steps != 0:
    raise kd_config.ConfigError(
        f'config.{at}steps={config.steps}: a prune run trains nothing; set '
        'it to 0 and train the pruned model in a later stage (init_from)')
  if data.text.is_text(config.data.name):
    check_same_tokenizer(config, s, source)


def check_stage(config, name: str) -> None:
  """A pipeline's stage `name`, before any stage runs: a prune stage
  against its source (an earlier stage, or a finished run), and a stage
  that starts from a prune stage against the pruned model."""
  stage, at = config.stages[name], f'stages.{name}.'
  source = stage.prune.source
  if source in config.stages:
    check_against(stage, config.stages[source], f'stage {source!r}', at)
  elif source and runs.saved_config(source) is not None:
    check_against(stage, runs.load_config(source), source, at)
  start = stage.get('init_from')
  if start in config.stages and is_prune_run(config.stages[start]):
    check_init_from(stage, config.stages[start], f'stage {start!r}', at)


def check_init_from(config, pruned, where: str, at: str = '') -> None:
  """A run starting from the pruned run of config `pruned` has its model."""
  mine = (config.model.name, config.model.kwargs.to_dict())
  theirs = (pruned.model.name, pruned.model.kwargs.to_dict())
  if _plain(mine) != _plain(theirs) and not config.get('init_from_layers'):
    raise kd_config.ConfigError(
        f'config.{at}init_from is the pruned {theirs[0]} {theirs[1]} '
        f'({where}), but config.{at}model is {mine[0]} {mine[1]}: set '
        f'config.{at}model.kwargs to the pruned model\'s')


def _plain(value):
  """`value` as its config.json holds it (tuples as lists)."""
  return json.loads(json.dumps(value))


def check_run_init_from(config) -> None:
  """A run whose init_from is a finished prune run has its model."""
  start = config.get('init_from')
  if start and (runs.summary(start) or {}).get('pruned'):
    check_init_from(config, runs.load_config(start), start)


def check_same_tokenizer(config, s, source: str) -> None:
  mine = (config.data.tokenizer, config.data.vocab_size,
          config.data.get('tokenizer_path', ''))
  theirs = (s.data.tokenizer, s.data.vocab_size,
            s.data.get('tokenizer_path', ''))
  if mine != theirs:
    raise kd_config.ConfigError(
        f'the calibration data is tokenized as (tokenizer, vocab_size, '
        f'tokenizer_path)={mine}, the model in {source} reads {theirs}: '
        'calibrate on text in the model\'s own tokens (set config.data.'
        'tokenizer, vocab_size and tokenizer_path as the source run has '
        'them)')


def calibration_batches(config, source_config, source: str):
  """The first `prune.calibration_batches` training batches, the source
  run's tokenizer reading them."""
  tok = (data.run_tokenizer(source_config, source)
         if data.text.is_text(config.data.name) else None)
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.steps = config.prune.calibration_batches
  parallel = sharding.create(c)
  batches = list(select.train_batches(c, parallel, 0, tok))
  if not batches:
    raise kd_config.ConfigError(
        f'config.data.name={config.data.name!r} gave no calibration batch')
  return batches, tok


def held_out_batches(config, tok) -> tuple[list, str]:
  """(batches, split): as many batches of a text dataset's validation
  split as calibrate (the loss that ranks layers is a held-out one), or
  none where there is no such split."""
  if not data.text.is_text(config.data.name) or (
      data.mixed.is_mixed(config.data.name)):
    return [], ''
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.data.eval_split, c.eval_batch_size = 'validation', config.batch_size
  try:
    found = list(itertools.islice(select.eval_batches(c, tok),
                                  config.prune.calibration_batches))
  except ValueError:  # Your own files may have no validation split.
    return [], ''
  return found, 'validation'


def evaluate(config, model, variables, tok) -> dict:
  """The test figures of `variables` (as a trained run reports them)."""
  parallel = sharding.create(config)
  eval_fn = parallel.wrap(steps.make_eval_step(model), 1, donate_first=False)
  return metrics.test_rates(eval_fn, parallel,
                            (parallel.replicate(variables),),
                            select.test_split(config, tok)())


def _tokens(batch) -> int:
  """The tokens of a text batch: its attention_mask (an MLM batch's 'mask'
  is its targets), else its token mask, else (a classification batch's
  'mask' is per example) every position."""
  for key in ('attention_mask', 'mask'):
    mask = batch.get(key)
    if mask is not None and np.ndim(mask) == 2:
      return int(np.sum(mask))
  return int(np.size(batch['image']))


def run(config, workdir: str, name: str = 'prune') -> dict:
  """Prunes `config.prune.source` into `workdir`; returns the summary (the
  finished one if this run already finished)."""
  if config.prune.calibration_batches < 1:
    raise kd_config.ConfigError(
        f'config.prune.calibration_batches='
        f'{config.prune.calibration_batches}: score on 1 or more batches')
  source_config = check(config)
  with runs.accepted(workdir, config, name) as done:
    if done is not None:
      return done
    source = config.prune.source
    found, step = runs.latest_state(source, f'[{name}] prune.source')
    variables = {'params': found['params'], **found['model_state']}
    batches, tok = calibration_batches(config, source_config, source)
    depth = targets.depth(config.prune.depth)
    held_out, split = (held_out_batches(config, tok)
                       if depth.by == 'loss' and depth.keep else ([], ''))
    vocab = data.run_spec(source_config, tok).num_classes
    print(f'[{name}] scoring {source} (step {step}) on {len(batches)} '
          f'calibration batches of {config.data.name}')
    p = prune.prune(config.model.name, source_config.model.kwargs.to_dict(),
                    vocab, variables, batches, config.prune.width,
                    config.prune.depth, held_out)
    model = models.create(config.model.name, vocab, **p.kwargs)
    seen = {'calibration_examples': sum(len(b['image']) for b in batches)}
    if data.text.is_text(config.data.name):
      seen['calibration_tokens'] = sum(_tokens(b) for b in batches)
    summary = {
        'steps': 0, 'pruned': True, 'source': source, 'source_step': step,
        'source_params': float(metrics.count_params(variables['params'])),
        'params': float(metrics.count_params(p.variables['params'])),
        'kept_layers': p.layers,
        'calibration_data': config.data.name,
        'calibration_batches': len(batches), **seen,
        **evaluate(config, model, p.variables, tok)}
    if depth.by == 'loss' and depth.keep:
      summary['layer_loss_split'] = split or 'train'
    write(workdir, config, p, summary, source)
    print(f'[{name}] {source} -> {workdir}: {summary["source_params"]:,.0f} '
          f'-> {summary["params"]:,.0f} parameters; model.kwargs '
          f'{p.kwargs}')
    return summary


def write(workdir: str, config, p: prune.Pruned, summary: dict,
          source: str) -> None:
  """The checkpoint, importance.json, the tokenizer and config.json, then
  summary.json: a run killed before the summary is redone by a rerun."""
  ckpts = os.path.join(workdir, 'checkpoints')
  shutil.rmtree(ckpts, ignore_errors=True)  # A killed run's partial step.
  mngr = checkpoint.manager(ckpts, 1, config.to_dict())
  checkpoint.save(mngr, 0, {'step': np.int32(0), 'params': p.variables[
      'params'], 'model_state': {}})
  mngr.wait_until_finished()
  mngr.close()
  tok = os.path.join(source, 'tokenizer.json')
  if os.path.exists(tok):
    shutil.copyfile(tok, os.path.join(workdir, 'tokenizer.json'))
  runs.write_json(os.path.join(workdir, 'importance.json'),
                  {'source': source, 'kept_layers': p.layers,
                   **p.scores.to_json()})
  runs.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  if jax.process_index() == 0:
    runs.write_json(os.path.join(workdir, 'summary.json'), summary)
