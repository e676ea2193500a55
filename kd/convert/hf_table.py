"""Hugging Face model families <-> kd models: the registry and the layout
operations every family's table is made of. No file I/O here (kd.convert.hf
reads and writes folders); the same table serves import and export.

A family (`Family`, registered in `FAMILIES` under its `model_type`) says

  kd_config(hf_config)  -> (kd model name, kd kwargs, vocabulary size),
                           UnsupportedError for what the kd model cannot do;
  hf_config(kwargs, vocab_size) -> the HF config.json dict (the inverse),
                           UnsupportedError naming a kd option without one;
  table(kwargs, vocab_size) -> [Tensor]: every HF tensor, its shape, the kd
                           parameters it becomes and the two layout maps.

A `Tensor`'s `to_kd(x)` turns the HF array into the tuple of kd arrays (in
`kd` order) and `to_hf(*arrays)` turns them back, exactly: import then
export gives the same bytes (up to the dtype asked for).

Layouts (HF nn.Linear weight [out, in]; GPT-2's Conv1D [in, out]):
  copy        same array (+ `add`: Gemma's RMSNorm weight w is kd's 1 + w)
  linear      [out, in] -> kernel [in, ...] (transpose, then split the heads:
              q_proj [H D, d] -> [d, H, D]; o_proj [d, H D] -> [H, D, d])
  reshape     same order, other shape (a bias [H D] -> [H, D]; Conv1D)
  split       one fused HF tensor -> several kd ones along the last axis
              (GPT-2's c_attn [d, 3 d] -> query, key, value)
"""
import dataclasses
from typing import Callable

import numpy as np

Shape = tuple[int, ...]


class UnsupportedError(ValueError):
  """An HF config (or a kd model, on export) uses what the other side cannot
  represent; the message names it and what is supported."""


@dataclasses.dataclass(frozen=True)
class Tensor:
  hf: str  # HF tensor name, e.g. 'model.layers.0.self_attn.q_proj.weight'.
  hf_shape: Shape
  kd: tuple[str, ...]  # kd parameter paths, e.g. 'blocks_0/attn/query/kernel'.
  kd_shapes: tuple[Shape, ...]
  to_kd: Callable[[np.ndarray], tuple[np.ndarray, ...]]
  to_hf: Callable[..., np.ndarray]


def copy(hf: str, path: str, shape: Shape, add: float = 0.0) -> Tensor:
  """Same layout; kd = hf + add (Gemma's (1 + w) RMSNorm: add=1)."""
  if add:
    return Tensor(hf, shape, (path,), (shape,), lambda x: (x + add,),
                  lambda x: x - add)
  return Tensor(hf, shape, (path,), (shape,), lambda x: (x,), lambda x: x)


def linear(hf: str, path: str, hf_shape: Shape, kd_shape: Shape) -> Tensor:
  """nn.Linear weight [out, in] <-> kernel [in, ...] (x.T reshaped)."""
  return Tensor(hf, hf_shape, (path,), (kd_shape,),
                lambda x: (x.T.reshape(kd_shape),),
                lambda x: x.reshape(hf_shape[::-1]).T)


def reshape(hf: str, path: str, hf_shape: Shape, kd_shape: Shape) -> Tensor:
  return Tensor(hf, hf_shape, (path,), (kd_shape,),
                lambda x: (x.reshape(kd_shape),),
                lambda x: x.reshape(hf_shape))


def split(hf: str, paths: tuple[str, ...], hf_shape: Shape,
          kd_shape: Shape) -> Tensor:
  """One HF tensor fused along its last axis <-> len(paths) kd tensors, each
  of `kd_shape` (its last axes the HF part's last axis split)."""
  n = len(paths)
  part = hf_shape[:-1] + (hf_shape[-1] // n,)
  return Tensor(hf, hf_shape, paths, (kd_shape,) * n,
                lambda x: tuple(p.reshape(kd_shape)
                                for p in np.split(x, n, axis=-1)),
                lambda *xs: np.concatenate([x.reshape(part) for x in xs],
                                           axis=-1))


@dataclasses.dataclass(frozen=True)
class Family:
  """One HF `model_type` (see the module doc)."""
  model_type: str
  architecture: str  # config.json's `architectures` on export.
  kd_model: str  # The kd model it converts to ('transformer_lm').
  kd_config: Callable[[dict], tuple[str, dict, int]]
  hf_config: Callable[[dict, int], dict]
  table: Callable[[dict, int], list[Tensor]]
  # HF tensor name prefixes a checkpoint may lack (a bare GPT2Model saves
  # 'wte.weight' for GPT2LMHeadModel's 'transformer.wte.weight').
  prefixes: tuple[str, ...] = ()
  # HF tensors read and dropped: {name regex: why} (buffers such as GPT-2's
  # causal mask `attn.bias` in old checkpoints).
  dropped: tuple[str, ...] = ()
  # kd kwargs -> {HF name: HF name it must equal} (a tied head saved anyway).
  duplicates: Callable[[dict], dict[str, str]] = lambda kwargs: {}
  # (regex, replacement) applied to a file's tensor names first: an older
  # spelling (BERT's LayerNorm.gamma / .beta for .weight / .bias).
  renames: tuple[tuple[str, str], ...] = ()
  # kd kwargs with every option the family sets (the model's defaults for
  # the rest), to compare a kd model with its HF config both ways.
  complete: Callable[[dict], dict] = dict
  # Whether a kd model of these kwargs exports as this family by default
  # (of the families of its kd_model, the first that says so).
  default_for: Callable[[dict], bool] = lambda kwargs: True
  # (kwargs, vocab_size, the files' tensor names) -> kwargs: what only the
  # weights tell (an encoder classifier saved without its masked-LM head).
  for_weights: Callable[[dict, int, set], dict] = (
      lambda kwargs, vocab_size, names: kwargs)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
  if family.model_type in FAMILIES:
    raise ValueError(f'HF model_type {family.model_type!r} is already '
                     'registered')
  FAMILIES[family.model_type] = family


def family(model_type) -> Family:
  if model_type not in FAMILIES:
    raise UnsupportedError(
        f'unsupported model_type {model_type!r}; supported: '
        f'{", ".join(sorted(FAMILIES))}')
  return FAMILIES[model_type]


class Reader:
  """An HF config dict over the class's defaults (transformers' values for
  the keys a config omits or leaves null), with refusals."""

  def __init__(self, config: dict, defaults: dict, model_type: str):
    self.config = {**defaults,
                   **{k: v for k, v in config.items() if v is not None}}
    self.model_type = model_type

  def __call__(self, key: str, default=None):
    return self.config.get(key, default)

  def require(self, key: str, allowed, default=None):
    """The value of `key`, which must be one of `allowed`."""
    value = self(key, default)
    if value not in allowed:
      raise UnsupportedError(
          f'{self.model_type} config {key}={value!r} is not supported; '
          f'supported: {", ".join(map(repr, allowed))}')
    return value
