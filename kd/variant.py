"""The setup every variant trainer shares (experiments/*/train.py: several
teachers, several students, a discriminator, a model that teaches itself).

A variant calls `setup` (checks, data spec, devices, optimizer), builds its
own state, step and eval step, and hands them to `train_and_test`, which runs
`kd.loop.train_variant` (restore, the loop, test, summary) with the test over the
config's test split. Its step evaluates `config.distill.terms`
with `kd.steps.apply_terms` and updates with `kd.steps.update`, as
`kd.steps.make_distill_step` does: schedules, warm-up, adapters and their
state work the same in every variant.
"""
from typing import Any, Callable, NamedTuple

import numpy as np

from kd import config as kd_config
from kd import data
from kd import fields as kd_fields
from kd import loop
from kd import metrics
from kd import models
from kd import optim
from kd.data import select
from kd.parallel import DataParallel

# The fields no variant step implements, each with the one value it runs
# with (the default): a different value is an error, not silently ignored.
UNSUPPORTED = {
    'dtype': 'float32',
    'label_smoothing': 0.0,
    'mixup_alpha': 0.0,
    'init_from': '',
    'distill.quantization_aware': False,
    'distill.teacher.workdir': '',
    'distill.teacher.cache': False,
    'distill.teacher.model_shards': 1,
    'steps_per_dispatch': 1,
}


def reject_unsupported(config, fields: dict, variant: str) -> None:
  """Raises ValueError for the first of `fields` (path -> the only value
  `variant` supports) that `config` sets otherwise."""
  for path, supported in fields.items():
    value = kd_fields.get(config, path)
    if hasattr(value, 'to_dict'):
      value = value.to_dict()
    if value != supported:
      raise ValueError(
          f'config.{path}={value!r}: the {variant} variant does not support '
          f'it; set it to {supported!r} (or use kd.main, which does)')


def check_term_names(terms, taken, variant: str) -> None:
  """Raises ValueError for a distillation term named like one of the
  variant's own metrics or aux entries (`taken`): its value would replace
  theirs in the log."""
  for term in terms:
    if term.name in taken:
      raise ValueError(
          f'distill term {term.name!r}: the {variant} variant logs its own '
          f'{term.name!r}; rename the term (taken: {", ".join(sorted(taken))})')


class Setup(NamedTuple):
  spec: Any  # kd.data.DatasetSpec
  parallel: DataParallel
  example: np.ndarray  # One zero input, for initialising models.
  tx: Any  # The optimizer of config.optimizer.
  num_classes: int
  num_examples: int  # The training split's, for adapters with a memory.


def setup(config, variant: str, unsupported: dict | None = None) -> Setup:
  """Checks `config` (`kd.config.validate` and the fields `variant` does not
  support, `UNSUPPORTED` unless given) before any work; returns what every
  variant builds first."""
  kd_config.validate(config)
  reject_unsupported(config, UNSUPPORTED if unsupported is None
                     else unsupported, variant)
  spec = data.run_spec(config)
  parallel = DataParallel(config.parallel)
  parallel.check_batch_size(config.batch_size)
  tx, _ = optim.create(config.optimizer, config.steps)
  d = config.data
  return Setup(spec, parallel, np.zeros((1, *spec.input_shape), np.float32),
               tx, spec.num_classes,
               data.num_examples(d.name, 'train', d.data_dir or None,
                                 d.download, d.image_size or None))


def create_model(s: Setup, model) -> Any:
  """The model of a `config.model`-like entry (`name`, `kwargs`)."""
  return models.from_config(model.name, model.kwargs, s.num_classes)


def named_test_rates(config, parallel, eval_fn, replicated_args) -> dict:
  """`kd.metrics.named_rates` of a `kd.steps.make_named_eval_step` over the
  config's test split."""
  return metrics.named_rates(metrics.sum_stats(
      eval_fn, parallel, replicated_args, select.eval_batches(config)))


def train_and_test(config, workdir: str, name: str, s: Setup, state,
                   train_step: Callable, extra: tuple, eval_fn: Callable,
                   eval_args: Callable) -> dict:
  """Trains with `kd.loop.train_variant`; the test runs `eval_fn` (a
  `kd.steps.make_named_eval_step`) on `eval_args(p_state)` over the test
  split. Returns the summary."""
  test = lambda p_state: named_test_rates(config, s.parallel, eval_fn,
                                         eval_args(p_state))
  return loop.train_variant(config, workdir, name, s.parallel, state,
                            train_step, extra, test)
