"""Shared by the kd.prune tests."""
import jax


def set_leaf(params, path: str, fn):
  """A copy of `params` with `fn` applied to the leaf at 'a/b/c'."""
  keys = path.split('/')
  out = jax.tree.map(lambda v: v, params)
  node = out
  for k in keys[:-1]:
    node = node[k]
  node[keys[-1]] = fn(node[keys[-1]])
  return out
