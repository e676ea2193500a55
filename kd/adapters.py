"""Learnable parts of distillation methods, trained with the student.

An adapter sits between a term's student/teacher outputs and its loss:
`apply(params, state, s, t, batch, rng) -> (loss_args, loss_kwargs, state)`.
Parameters join the student's in the optimizer; state (e.g. CRD's memory
bank) is carried in the train state and kept identical on every device.
"""
import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from kd.losses import features as feature_losses
from kd.losses import norms
from kd.parallel import AXIS


def _kernel(x, size: int):
  return (size,) * (x.ndim - 2)


class BatchNormTrain(nn.Module):
  """Batch normalisation with the current batch's statistics (per device),
  a learned scale and bias. Adapters only run in training, so no running
  averages are kept."""

  @nn.compact
  def __call__(self, x, eps: float = 1e-5):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.var(x, axes)
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


class Connector(nn.Module):
  """AB connector (Heo et al., AAAI 2019): 1x1 convolution to the teacher's
  channels, then batch normalisation."""
  features: int

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, _kernel(x, 1), use_bias=False)(x)
    return BatchNormTrain()(x)


class ConvEncoder(nn.Module):
  """Three 3x3 convolutions with leaky ReLU (slope 0.1), the last two to
  `features` channels: the FT paraphraser's encoder and the translator."""
  features: int
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x):
    for width in (x.shape[-1], self.features, self.features):
      x = nn.Conv(width, _kernel(x, 3))(x)
      if self.batch_norm:
        x = BatchNormTrain()(x)
      x = nn.leaky_relu(x, 0.1)
    return x


class Paraphraser(nn.Module):
  """FT paraphraser (Kim et al., NeurIPS 2018): an autoencoder of the
  teacher's map whose code, `rate` x its channels, is the teacher factor."""
  channels: int
  rate: float = 0.5

  @nn.compact
  def __call__(self, x, factor_only: bool = False):
    factor = ConvEncoder(max(1, int(self.channels * self.rate)),
                         name='encoder')(x)
    if factor_only:
      return factor
    y = factor
    for i, width in enumerate((factor.shape[-1], self.channels,
                               self.channels)):
      y = nn.leaky_relu(nn.ConvTranspose(width, _kernel(y, 3),
                                         name=f'decoder{i}')(y), 0.1)
    return factor, y


class Regressor(nn.Module):
  """FitNets regressor: a linear map of the student's feature to the
  teacher's width (1x1 convolution for maps, dense for vectors)."""
  features: int

  @nn.compact
  def __call__(self, x):
    if x.ndim > 2:
      kernel = (1,) * (x.ndim - 2)
      return nn.Conv(self.features, kernel, use_bias=False)(x)
    return nn.Dense(self.features)(x)


class VIDRegressor(nn.Module):
  """VID (Ahn et al. 2019): mean from three 1x1 convolutions of the student
  map, and a per-channel variance parameter (softplus(log_scale) + eps),
  initialised so the variance starts at 5 as in the reference code."""
  features: int
  hidden: int
  init_var: float = 5.0

  @nn.compact
  def __call__(self, x):
    kernel = (1,) * (x.ndim - 2)
    h = nn.relu(nn.Conv(self.hidden, kernel, use_bias=False)(x))
    h = nn.relu(nn.Conv(self.hidden, kernel, use_bias=False)(h))
    mu = nn.Conv(self.features, kernel, use_bias=False)(h)
    inv_softplus = math.log(math.expm1(self.init_var - 1e-5))
    log_scale = self.param('log_scale', nn.initializers.constant(inv_softplus),
                           (self.features,))
    return mu, log_scale


class Embed(nn.Module):
  """Linear embedding to `dim`, L2-normalised (CRD heads)."""
  dim: int

  @nn.compact
  def __call__(self, x):
    return norms.normalize(nn.Dense(self.dim)(x.reshape(x.shape[0], -1)))


@dataclasses.dataclass(frozen=True)
class Adapter:
  init: Callable[..., tuple[Any, Any]]  # (rng, s, t, num_examples) -> p, st
  apply: Callable[..., tuple[tuple, dict, Any]]


def _stateless(module_fn, call):
  def init(rng, s, t, num_examples):
    del num_examples
    return module_fn(s, t).init(rng, s), {}

  def apply(params, state, s, t, batch, rng):
    del batch, rng
    args, kwargs = call(module_fn(s, t).apply(params, s), t)
    return args, kwargs, state

  return Adapter(init, apply)


def regressor() -> Adapter:
  return _stateless(lambda s, t: Regressor(t.shape[-1]),
                    lambda out, t: ((out, t), {}))


def linear() -> Adapter:
  """A learnable dense map of the student's last axis to the teacher's width,
  y = x W + b on every position: hidden states [B, T, D_s] -> [B, T, D_t]
  (TinyBERT's W_h), vectors [B, D_s] -> [B, D_t]; the teacher's unchanged."""
  return _stateless(lambda s, t: nn.Dense(t.shape[-1]),
                    lambda out, t: ((out, t), {}))


def vid(hidden: int = 0) -> Adapter:
  return _stateless(
      lambda s, t: VIDRegressor(t.shape[-1], hidden or 2 * t.shape[-1]),
      lambda out, t: ((out[0], t), {'log_scale': out[1]}))


class _CRDHeads(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, s, t):
    return Embed(self.dim, name='student')(s), Embed(self.dim, name='teacher')(t)


def crd(feat_dim: int = 128, num_negatives: int = 16384,
        temperature: float = 0.07, momentum: float = 0.5) -> Adapter:
  """CRD (Tian et al., ICLR 2020): embedding heads for both models and a
  momentum memory bank of every training example's embeddings.

  For each example the positive is its own bank entry and `num_negatives`
  entries drawn uniformly; scores exp(v . m / T) / Z, Z fixed from the first
  batch (mean score * N). The banks update as
  m_i <- normalize(momentum * m_i + (1 - momentum) * v_i) from the whole
  global batch (gathered over devices), so every replica stays identical.
  Loss inputs: (student scores vs teacher bank, teacher scores vs student
  bank), each [batch, 1 + K], for `kd.losses.contrastive.crd`.
  """
  heads = _CRDHeads(feat_dim)

  def init(rng, s, t, num_examples):
    k1, k2, k3 = jax.random.split(rng, 3)
    stdv = 1.0 / math.sqrt(feat_dim / 3)
    bank = lambda k: jax.random.uniform(k, (num_examples, feat_dim),
                                        minval=-stdv, maxval=stdv)
    state = {'memory_student': bank(k2), 'memory_teacher': bank(k3),
             'z_student': -jnp.ones(()), 'z_teacher': -jnp.ones(())}
    return heads.init(k1, s, t), state

  def apply(params, state, s, t, batch, rng):
    v_s, v_t = heads.apply(params, s, t)
    idx = batch['index']
    n = state['memory_student'].shape[0]
    neg = jax.random.randint(rng, (idx.shape[0], num_negatives), 0, n)
    contrast = jnp.concatenate([idx[:, None], neg], axis=1)
    mem_s = jax.lax.stop_gradient(state['memory_student'])
    mem_t = jax.lax.stop_gradient(state['memory_teacher'])
    out_s = jnp.exp(jnp.einsum('bkd,bd->bk', mem_t[contrast], v_s) / temperature)
    out_t = jnp.exp(jnp.einsum('bkd,bd->bk', mem_s[contrast], v_t) / temperature)
    z_s = jnp.where(state['z_student'] < 0, jax.lax.pmean(
        jnp.mean(jax.lax.stop_gradient(out_s)), AXIS) * n, state['z_student'])
    z_t = jnp.where(state['z_teacher'] < 0, jax.lax.pmean(
        jnp.mean(jax.lax.stop_gradient(out_t)), AXIS) * n, state['z_teacher'])
    # Bank update from the global batch, identical on every device.
    all_idx = jax.lax.all_gather(idx, AXIS, tiled=True)
    all_s = jax.lax.all_gather(jax.lax.stop_gradient(v_s), AXIS, tiled=True)
    all_t = jax.lax.all_gather(jax.lax.stop_gradient(v_t), AXIS, tiled=True)
    update = lambda mem, v: mem.at[all_idx].set(
        norms.normalize(momentum * mem[all_idx] + (1 - momentum) * v))
    new_state = {'memory_student': update(mem_s, all_s),
                 'memory_teacher': update(mem_t, all_t),
                 'z_student': z_s, 'z_teacher': z_t}
    return (out_s / z_s, out_t / z_t), {'num_examples': n}, new_state

  return Adapter(init, apply)


def ab() -> Adapter:
  """AB: the student's pre-activation map through a `Connector` to the
  teacher's channels, for `kd.losses.features.activation_boundary`."""
  return _stateless(lambda s, t: Connector(t.shape[-1]),
                    lambda out, t: ((out, t), {}))


def _channel_stats(x, mask=None):
  """Per-channel mean and standard deviation of map x over the global batch
  (every device's shard) and the positions; `mask` [B] weights examples."""
  w = jnp.ones(x.shape[:1]) if mask is None else jnp.asarray(mask, x.dtype)
  w = w.reshape((-1,) + (1,) * (x.ndim - 1)) * jnp.ones(x.shape[:-1] + (1,))
  axes = tuple(range(x.ndim - 1))
  total = jax.lax.psum(jnp.sum(w, axes), AXIS)
  mean = jax.lax.psum(jnp.sum(w * x, axes), AXIS) / total
  square = jax.lax.psum(jnp.sum(w * x**2, axes), AXIS) / total
  return mean, jnp.sqrt(jnp.maximum(square - mean**2, 0.0))


def ofd() -> Adapter:
  """OFD (Heo et al., ICCV 2019): the student's pre-ReLU map through a
  `Connector` (1x1 convolution + batch norm) to the teacher's channels, and
  the teacher's per-channel margin for `kd.losses.features.ofd`.

  The paper reads the margin from the batch norm before the teacher's ReLU
  (x ~ N(beta, gamma^2)). Here it comes from the statistics of the teacher's
  pre-ReLU map itself, measured once on the first training batch (global,
  over devices) and then kept in this term's state: no per-model lookup of
  which batch norm feeds the ReLU, and where a residual sum precedes it (a
  ResNet's stage output) it is the distribution of the map compared.
  """

  def init(rng, s, t, num_examples):
    del num_examples
    # A positive margin marks "not measured yet": a real one is negative.
    return (Connector(t.shape[-1]).init(rng, s),
            {'margin': jnp.ones((t.shape[-1],), jnp.float32)})

  def apply(params, state, s, t, batch, rng):
    del rng
    t = jax.lax.stop_gradient(t)
    measured = feature_losses.ofd_margin(
        *_channel_stats(t.astype(jnp.float32), batch.get('mask')))
    margin = jnp.where(state['margin'] > 0, measured, state['margin'])
    out = Connector(t.shape[-1]).apply(params, s)
    return (out, t), {'margin': margin}, {'margin': margin}

  return Adapter(init, apply)


def _resize(x, size):
  """Nearest-neighbour resize of x's spatial axes to `size`."""
  if tuple(x.shape[1:-1]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), 'nearest')


class ABF(nn.Module):
  """Attention-based fusion of review KD (Chen et al., CVPR 2021): the
  stage's map to `mid` channels (1x1 conv + BN); with the fused map of the
  deeper stage (`residual`, resized to this one), x = a x + b residual with
  per-position weights (a, b) = sigmoid(1x1 conv of both); resized to the
  teacher's `out_size`, then a 3x3 conv + BN to `features` channels. Returns
  (output, fused map for the next shallower stage)."""
  mid: int
  features: int

  @nn.compact
  def __call__(self, x, residual, out_size):
    # kaiming_uniform(a=1) of the reference code.
    init = nn.initializers.lecun_uniform()
    x = nn.Conv(self.mid, _kernel(x, 1), use_bias=False, kernel_init=init,
                name='conv1')(x)
    x = BatchNormTrain(name='bn1')(x)
    if residual is not None:
      y = _resize(residual, x.shape[1:-1])
      z = nn.sigmoid(nn.Conv(2, _kernel(x, 1), name='attention')(
          jnp.concatenate([x, y], -1)))
      x = x * z[..., :1] + y * z[..., 1:]
    x = _resize(x, out_size)
    y = nn.Conv(self.features, _kernel(x, 3), use_bias=False,
                kernel_init=init, name='conv2')(x)
    return BatchNormTrain(name='bn2')(y), x


class _Review(nn.Module):
  """ABFs from the deepest stage to the shallowest (knowledge review)."""

  @nn.compact
  def __call__(self, feats, teacher_feats):
    mid = min(512, feats[-1].shape[-1])
    outs, residual = [], None
    for i in reversed(range(len(feats))):
      out, residual = ABF(mid, teacher_feats[i].shape[-1], name=f'abf{i}')(
          feats[i], residual, teacher_feats[i].shape[1:-1])
      outs.insert(0, out)
    return tuple(outs)


def _as_maps(feats, rank: int):
  """Vectors [B, C] (a pooled embedding) as 1 x .. x 1 maps of `rank`
  spatial axes."""
  return tuple(f.reshape(f.shape[0], *(1,) * rank, f.shape[-1])
               if f.ndim == 2 else f for f in feats)


def review_kd() -> Adapter:
  """Review KD (Chen et al., CVPR 2021): the student's stages, shallow to
  deep (a term naming them comma-separated, e.g.
  'stage-3,stage-2,stage-1,embedding'), fused from the deepest down by
  `ABF`s, each output at its teacher stage's size and width; loss inputs
  (the fused outputs, the teacher's maps) for `kd.losses.features.hcl`.
  """

  def maps(s, t):
    rank = s[0].ndim - 2
    return _as_maps(s, rank), _as_maps(t, rank)

  def init(rng, s, t, num_examples):
    del num_examples
    return _Review().init(rng, *maps(s, t)), {}

  def apply(params, state, s, t, batch, rng):
    del batch, rng
    s, t = maps(s, t)
    return (_Review().apply(params, s, t), t), {}, state

  return Adapter(init, apply)


class _FactorTransfer(nn.Module):
  channels: int
  rate: float

  def setup(self):
    self.paraphraser = Paraphraser(self.channels, self.rate)
    self.translator = ConvEncoder(max(1, int(self.channels * self.rate)),
                                  batch_norm=True)

  def __call__(self, s, t):
    return self.paraphraser(t), self.translator(s)

  def teacher_factor(self, t):
    return self.paraphraser(t, factor_only=True)

  def student_factor(self, s):
    return self.translator(s)


FT_STAGES = ('paraphraser', 'translator')


def ft(stage: str = 'translator', rate: float = 0.5) -> Adapter:
  """Factor transfer (Kim et al., NeurIPS 2018): a paraphraser and a
  translator, both in this term's parameters.

  stage 'paraphraser' (the pre-training stage, run first with
  `config.init_from` carrying the result on): loss inputs (reconstruction of
  the teacher's map, the map), for the `hint` (MSE) loss; the student is not
  involved. stage 'translator': (translator(student map), the frozen
  paraphraser's factor of the teacher's map), for `factor_transfer`.
  """
  if stage not in FT_STAGES:
    raise ValueError(f'unknown ft stage {stage!r}; valid: {FT_STAGES}')

  def module(t):
    return _FactorTransfer(t.shape[-1], rate)

  def init(rng, s, t, num_examples):
    del num_examples
    return module(t).init(rng, s, t), {}

  def apply(params, state, s, t, batch, rng):
    del batch, rng
    m = module(t)
    if stage == 'paraphraser':
      (_, rec), _ = m.apply(params, s, t)
      return (rec, t), {}, state
    frozen = jax.lax.stop_gradient(params)
    t_factor = m.apply(frozen, t, method=_FactorTransfer.teacher_factor)
    return (m.apply(params, s, method=_FactorTransfer.student_factor),
            t_factor), {}, state

  return Adapter(init, apply)


ADAPTERS = {'regressor': regressor, 'linear': linear, 'vid': vid, 'crd': crd,
            'ab': ab, 'ft': ft, 'ofd': ofd, 'review_kd': review_kd}


def register(name: str, factory: Callable[..., Adapter]) -> None:
  """Adds an adapter factory so configs can name it."""
  if name in ADAPTERS and ADAPTERS[name] is not factory:
    raise ValueError(f'adapter {name!r} is already registered')
  ADAPTERS[name] = factory


def get(name: str, **kwargs) -> Adapter:
  if name not in ADAPTERS:
    raise ValueError(f'unknown adapter {name!r}; valid adapters: '
                     f'{", ".join(sorted(ADAPTERS))}')
  return ADAPTERS[name](**kwargs)
