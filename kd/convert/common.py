"""Shared by every weight source: reading a state dict, the PyTorch -> Flax
layout of each layer kind, renaming by a table, checking against the model,
and writing a kd run directory.

A source module is a table: `RULES[model] = [(regex, replacement), ...]`,
applied in order (`re.sub`) to a PyTorch module path (`layer1.0.conv1`) to
give the Flax module path (`layer1_0/Conv_0`). The leaves then follow the
layer kind:

  conv    weight [O, I/g, kh, kw] -> kernel [kh, kw, I/g, O] (grouped and
          depthwise convolutions have the same layout in both), bias -> bias
  linear  weight [out, in] -> kernel [in, out], bias -> bias
  BN      weight -> scale, bias -> bias (params); running_mean -> mean,
          running_var -> var (batch_stats); num_batches_tracked dropped
  LN      weight [C] -> scale, bias -> bias
  other   a parameter of the module itself (a ViT's `cls_token`,
          `pos_embed`) keeps its name and layout
"""
import hashlib
import json
import os
import re
import shutil
import tempfile

import jax
import numpy as np

from kd import checkpoint, config as config_lib, models

Rules = list[tuple[str, object]]


class MismatchError(ValueError):
  """The state dict and the kd model disagree on names or shapes."""


def numbered(torch_name: str, flax_name: str) -> tuple[str, object]:
  """The rule `{torch_name}K` -> `{flax_name}_{K-1}` for a module's last
  path component (`conv2` -> `Conv_1`, `bn3` -> `BatchNorm_2`): Flax names
  unnamed submodules by creation order from 0, PyTorch code from 1."""
  return (rf'(^|/){torch_name}(\d+)$',
          lambda m: f'{m[1]}{flax_name}_{int(m[2]) - 1}')


CONV_BN = [numbered('conv', 'Conv'), numbered('bn', 'BatchNorm')]


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _unwrap(obj) -> dict:
  """The state dict inside a checkpoint: RepDistiller and mdistiller save
  `{'model': state_dict, ...}`, others `{'state_dict': ...}`, torchvision
  the bare state dict; `module.` prefixes (DataParallel) are dropped."""
  for key in ('model', 'state_dict', 'net'):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  return {(k[len('module.'):] if k.startswith('module.') else k): v
          for k, v in obj.items()}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A PyTorch state dict as NumPy arrays, from `.pth`/`.pt` (needs torch),
  `.safetensors` or `.npz`; ValueError naming a missing or damaged file."""
  ext = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such file; give the path of a .pth/.pt, '
                     '.safetensors or .npz checkpoint')
  if ext in ('.pth', '.pt', '.tar'):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          f'reading {path} needs PyTorch: `pip install torch` (the CPU wheel '
          f'is enough), or convert the file to .safetensors or .npz '
          f'elsewhere') from e
    try:  # Tensors and plain containers only: no code runs from the file.
      obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'{path}: torch.load(weights_only=True) failed ({e}); if you trust '
          f'the file, save its state dict alone (`torch.save(ckpt["model"], '
          f'...)`) or as .safetensors and convert that') from e
    return {k: v.detach().cpu().numpy() for k, v in _unwrap(obj).items()
            if hasattr(v, 'detach')}
  try:
    if ext == '.safetensors':
      from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
      return _unwrap(load_file(path))
    if ext == '.npz':
      with np.load(path, allow_pickle=False) as f:
        return _unwrap({k: f[k] for k in f.files})
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not a readable {ext} file ({e}); it may be '
                     'truncated or another format: download or save it '
                     'again') from e
  raise ValueError(f'{path}: unknown format {ext!r}; give a .pth/.pt, '
                   f'.safetensors or .npz state dict')


def _rename(module: str, rules: Rules) -> str:
  for pattern, replacement in rules:
    module = re.sub(pattern, replacement, module)
  return module


def _leaf(leaf: str, value: np.ndarray, is_bn: bool):
  """(collection, Flax leaf name, array) for one PyTorch tensor; None for
  one that is dropped."""
  if leaf == 'num_batches_tracked':
    return None
  if is_bn:
    return {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
            'running_mean': ('batch_stats', 'mean'),
            'running_var': ('batch_stats', 'var')}.get(
                leaf, ('params', leaf)) + (value,)
  if leaf != 'weight':
    return 'params', leaf, value
  if value.ndim == 1:  # A LayerNorm's (or GroupNorm's) affine scale.
    return 'params', 'scale', value
  if value.ndim == 4:
    return 'params', 'kernel', value.transpose(2, 3, 1, 0)
  return 'params', 'kernel', value.T


def to_variables(state_dict: dict[str, np.ndarray], rules: Rules,
                 abstract_variables) -> dict:
  """The model's variables `{'params', 'batch_stats'}` from `state_dict`.

  Raises MismatchError listing every missing, unexpected or mis-shaped key
  (with its PyTorch name) when the two do not correspond one to one.
  """
  want = {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in
          jax.tree_util.tree_leaves_with_path(dict(abstract_variables))}
  modules: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition('.')
    modules.setdefault(module, {})[leaf] = np.asarray(value)
  flat, source, problems = {}, {}, []  # source: target -> PyTorch key.
  for module, leaves in modules.items():
    is_bn = 'running_mean' in leaves
    # A top-level parameter (`cls_token`) has no module: the root's.
    path = tuple(_rename(module, rules).split('/')) if module else ()
    for leaf, value in leaves.items():
      if (converted := _leaf(leaf, value, is_bn)) is None:
        continue
      collection, name, array = converted
      target = (collection, *path, name)
      key = f'{module}.{leaf}' if module else leaf
      where = '/'.join(target)
      if target in source:
        problems.append(f'duplicate: {key} and {source[target]} both map '
                        f'to {where}')
      elif target not in want:
        problems.append(f'unexpected: {key} {tuple(value.shape)} (would be '
                        f'{where}, not in the model)')
      elif want[target] != array.shape:
        problems.append(f'shape mismatch: {key} {tuple(value.shape)} -> '
                        f'{where} {array.shape}, the model has '
                        f'{want[target]}')
      else:
        flat[target] = array.astype(np.float32)
      source.setdefault(target, key)
  problems += [f'missing: {"/".join(k)} {want[k]} (no PyTorch key maps '
               f'to it)' for k in want if k not in source]
  if problems:
    shown = problems[:50] + ([f'... and {len(problems) - 50} more']
                             if len(problems) > 50 else [])
    raise MismatchError(
        f'the state dict does not match the model ({len(problems)} '
        f'problems; is --model right?):\n  ' + '\n  '.join(shown))
  variables: dict = {}
  for path, array in flat.items():
    node = variables
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = array
  return variables


def abstract_variables(model_name: str, num_classes: int, input_shape,
                       **kwargs):
  model = models.create(model_name, num_classes, **kwargs)
  return model, jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros((1, *input_shape),
                                                    np.float32), train=False))


def run_config(model_name: str, data: str, kwargs: dict | None = None):
  """A kd run config that names the converted model (with its `kwargs`) and
  its data; zero steps: nothing is trained here."""
  c = config_lib.run_config()
  c.data.name = data
  c.model.name = model_name
  c.model.kwargs.update(kwargs or {})
  c.steps = 0
  return c


def write_run(out: str, variables: dict, config, summary: dict, *,
              extra_files: dict[str, str] | None = None,
              extra_json: dict[str, object] | None = None) -> None:
  """Writes RUN_DIR (config.json, checkpoints/0/, summary.json, plus
  `extra_files` {name: source path} copied and `extra_json` {name: object})
  in a temporary folder beside it, renamed into place at the end: a failure
  leaves nothing behind."""
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f'{out} exists; remove it or choose another --out')
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
  try:
    params = variables['params']
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    mngr = checkpoint.manager(os.path.join(tmp, 'checkpoints'))
    checkpoint.save(mngr, config.steps, {
        'step': np.int32(config.steps), 'params': params,
        'model_state': model_state})
    mngr.wait_until_finished()
    mngr.close()
    for name, src in (extra_files or {}).items():
      shutil.copyfile(src, os.path.join(tmp, name))
    for name, obj in (*(extra_json or {}).items(),
                      ('config.json', config.to_dict()),
                      ('summary.json', summary)):
      with open(os.path.join(tmp, name), 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
