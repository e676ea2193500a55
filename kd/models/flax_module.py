"""Any `flax.linen` module as a kd model, without editing it.

  model.name = 'module:my_package.nets:MyNet'   # a Module class, or a
  model.kwargs = {'width': 64,                  # function that returns one
                  'capture': ('Dense_0', 'block1/conv')}

The module's output is the logits [..., num_classes]. Its features are the
outputs of the submodules named by path in `capture` (relative to the
module: `block1/conv` is the `conv` inside its `block1`), each the value
that `capture_intermediates` would record for that submodule's `__call__`,
read here with `nn.intercept_methods` (the hook `capture_intermediates`
works by) so that the module needs no `sow` and kd's variable collections
stay the module's own: its parameters sit under `module/` in kd's
checkpoints. A distillation term then names a feature by its path
(`student='Dense_0'`).

kd passes `num_classes` and `dtype` to the module where it takes arguments
of these names; otherwise set its class count in `kwargs` under its own
name (its output is checked against the data's classes). Training mode
reaches its `__call__` as `train`/`training`/`is_training`, or negated as
`deterministic`/`use_running_average`, whichever it takes. The module's own
`sow` calls into 'intermediates' do nothing here (kd never makes that
collection mutable, as `init` does not by default): capture the submodule
whose output holds the value instead.
"""
import importlib
import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

PREFIX = 'module:'
# __call__ argument -> whether it is the negation of kd's `train`.
_TRAIN_ARGS = {'train': False, 'training': False, 'is_training': False,
               'deterministic': True, 'use_running_average': True}


def load(name: str) -> Callable[..., nn.Module]:
  """The class or function that `module:package.path:Name` names."""
  parts = name[len(PREFIX):].split(':')
  if not name.startswith(PREFIX) or len(parts) != 2 or not all(parts):
    raise ValueError(f'model {name!r}: name a user module as '
                     f'"module:package.path:ClassName"')
  path, attr = parts
  try:
    found = importlib.import_module(path)
  except ImportError as e:
    raise ValueError(f'model {name!r}: cannot import {path!r} ({e}); put '
                     f'its package on PYTHONPATH') from e
  for part in attr.split('.'):
    if not hasattr(found, part):
      raise ValueError(f'model {name!r}: {path} has no {attr!r}; it has: '
                       + ', '.join(n for n in sorted(vars(found))
                                   if not n.startswith('_')))
    found = getattr(found, part)
  return found


def _train_kwargs(module: nn.Module, train: bool) -> dict:
  params = inspect.signature(type(module).__call__).parameters
  for arg, negated in _TRAIN_ARGS.items():
    if arg in params:
      return {arg: (not train) if negated else train}
  return {}


class Captured(nn.Module):
  """kd's `(logits, features)` of `module`: its output, and the outputs of
  its submodules at the paths in `capture`."""
  module: nn.Module
  capture: Sequence[str] = ()
  num_classes: int | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    outputs: dict[str, Any] = {}
    calls: dict[str, int] = {}
    depth = len(self.path) + 1  # Paths below `module`.

    def record(call, args, kwargs, context):
      y = call(*args, **kwargs)
      if context.method_name == '__call__':
        path = '/'.join(context.module.path[depth:])
        outputs[path], calls[path] = y, calls.get(path, 0) + 1
      return y

    with nn.intercept_methods(record):
      logits = self.module(x, **_train_kwargs(self.module, train))
    name = type(self.module).__name__
    if not isinstance(logits, jax.Array) or (
        self.num_classes and logits.shape[-1:] != (self.num_classes,)):
      raise ValueError(
          f'{name} returned {jax.tree.map(jnp.shape, logits)}; kd reads its '
          f'output as logits [..., {self.num_classes}]: give the module its '
          f'class count in model.kwargs, or wrap it to return the logits')
    features = {}
    for path in self.capture:
      if not isinstance(outputs.get(path), jax.Array):
        available = ', '.join(f'{p} {tuple(y.shape)}' for p, y in sorted(
            outputs.items()) if p and isinstance(y, jax.Array))
        what = ('no submodule' if path not in outputs else
                'a submodule whose output is not one array:')
        raise ValueError(f'capture: {name} has {what} {path!r}; submodule '
                         f'paths and output shapes: {available}')
      if calls[path] > 1:
        raise ValueError(f'capture: {name} calls {path!r} {calls[path]} '
                         f'times; name a submodule called once')
      features[path] = outputs[path]
    return logits.astype(jnp.float32), features


def create(name: str, num_classes: int, dtype=None,
           capture: str | Sequence[str] = (), **kwargs) -> Captured:
  """The user module `name` (`module:package.path:Name`) built with
  `kwargs`, returning kd's `(logits, features)`."""
  factory = load(name)
  if not callable(factory):
    raise ValueError(f'model {name!r} is a {type(factory).__name__}, not a '
                     f'flax.linen.Module class or a function returning one')
  params = inspect.signature(factory).parameters
  if 'num_classes' in params:
    kwargs['num_classes'] = num_classes
  if 'dtype' in params and dtype is not None:
    kwargs['dtype'] = dtype
  try:
    module = factory(**kwargs)
  except TypeError as e:
    raise ValueError(f'model {name!r} with model.kwargs {kwargs}: {e}; its '
                     f'arguments: {", ".join(params)}') from e
  if not isinstance(module, nn.Module):
    raise ValueError(f'model {name!r} is a {type(module).__name__}, not a '
                     f'flax.linen.Module')
  if isinstance(capture, str):
    capture = capture.split(',')
  return Captured(module, tuple(p.strip() for p in capture), num_classes)
