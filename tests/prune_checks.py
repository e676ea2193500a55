"""Shared by the kd.prune tests."""
import os

import jax

from launch import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spec_configs(spec: str, get_config, root: str) -> list:
  """The config of every run of launch/specs/`spec`.py under `root`."""
  loaded = sweep.load_spec(os.path.join(ROOT, 'launch', 'specs', f'{spec}.py'))
  return [get_config(r.arg) for r in sweep.expand(loaded, root)]


def set_leaf(params, path: str, fn):
  """A copy of `params` with `fn` applied to the leaf at 'a/b/c'."""
  keys = path.split('/')
  out = jax.tree.map(lambda v: v, params)
  node = out
  for k in keys[:-1]:
    node = node[k]
  node[keys[-1]] = fn(node[keys[-1]])
  return out
