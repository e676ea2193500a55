"""Student and teacher split over a `data x fsdp x tensor` device mesh.

Beyond data parallelism: `ShardedParallel` places every parameter (and the
optimizer's statistics, and a frozen teacher's variables) split over the
mesh by *rules*, the batch split over `('data', 'fsdp')`, and compiles a
step as one global-batch program with `jax.jit`; XLA's partitioner (GSPMD,
Auto axes) inserts the all-gathers and reduce-scatters. Each device holds
about 1 / (fsdp * tensor) of a transformer LM (1 / fsdp of other models'
kernels); a teacher too large for one device fits on the mesh.

Rules, in two tables:
- `RULES`: (regex, logical axes) pairs. The regex is searched in a leaf's
  path 'params/blocks_0/attn/query/kernel'; the first match names the
  logical axes of the leaf's *trailing* dimensions (aligned to the right,
  so a conv kernel [3, 3, in, out] takes ('embed', None) on its last two,
  and layers stacked on a leading axis need no new rule).
- `LOGICAL_AXES`: logical axis -> mesh axis (or tuple of mesh axes, or
  None). A dimension is split only over the mesh axes whose sizes divide
  it, and a mesh axis is used once per leaf; everything else is replicated,
  as are leaves no rule names (scalars, step counters).

Rules are keyed by parameter paths instead of flax's logical-partitioning
metadata (`nn.with_logical_partitioning`) because paths exist on every
pytree that holds the parameters: the model code stays unannotated, any
Flax module (CNNs included) is sharded by adding a row, a teacher loaded
from a checkpoint as plain arrays (no `Partitioned` boxes) is sharded by the
same table as the student, and optimizer states (Adam's `mu`, `nu`) end
with the parameter's path, so they are split like the parameters.

Steps: `wrap` takes the same per-shard steps as `kd.parallel.DataParallel`
(collectives `lax.pmean(x, 'batch')`, `lax.axis_index('batch')`) and runs
them over the *global* batch: the named axis is bound with size 1 (the
whole batch is one shard), so collectives are identities and the step is a
plain global-batch function. Two consequences: batch norm statistics are
over the global batch (synchronised BN), and a step's random numbers and
mixup permutation are those of one device over the whole batch. A step
written with no collectives runs unchanged.

From a config (see `create`):

  config.parallel = 'sharded'
  config.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2))

or on the command line `--config.parallel=sharded --config.mesh.fsdp=4`;
one size may be -1 (the devices left), missing ones are 1. `{'data': -1}`
(the default) is data parallelism with replicated models; `{'fsdp': -1}`
ZeRO-3 / FSDP; `{'data': 2, 'fsdp': 4}` FSDP within groups of 4 devices
(the later axes are the nearer devices: keep `fsdp` and `tensor` within a
host); `tensor` splits heads and MLP widths (Megatron), for layers too wide
for one device. The batch must be divisible by data * fsdp. Other models:
pass `rules` with rows for their parameter paths (patterns are searched in
paths that may carry a prefix such as 'params/' or 'opt_state/0/mu/0/', so
anchor their end with `$`, not their start).

Multi-host: the mesh spans `jax.devices()` of all processes, each feeds
its own part of the global batch (`shard`), and `to_host` of a split array
gathers it from all of them (a collective: call it on every process). On
one machine, 2 processes x 4 CPU devices:

  KD_DEVICES_PER_PROCESS=4 launch/local_multihost.sh 2 --config=CONFIG \
      --config.parallel=sharded --config.mesh.data=2 --config.mesh.fsdp=2 \
      --config.mesh.tensor=2 --workdir=DIR

and on a cluster `srun` (or a TPU VM) starts the processes instead.
"""
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from kd import names
from kd import parallel as data_parallel
from kd.config import ConfigError
from kd.parallel import AXIS, DataParallel

DATA, FSDP, TENSOR = 'data', 'fsdp', 'tensor'
MESH_AXES = (DATA, FSDP, TENSOR)
BATCH_AXES = (DATA, FSDP)  # The batch's leading dimension is split over these.
KINDS = names.PARALLEL  # The values of `config.parallel`.

Rules = Sequence[tuple[str, tuple[str | None, ...]]]

# TransformerLM (kd.models.lm): Megatron-style tensor splits of heads and
# MLP widths, FSDP over the model width.
LM_RULES: Rules = (
    (r'embed/embedding$', ('vocab', 'embed')),
    (r'attn/(query|key|value)/kernel$', ('embed', 'heads', 'kv')),
    (r'attn/out/kernel$', ('heads', 'kv', 'embed')),
    (r'mlp/(gate|up)/kernel$', ('embed', 'mlp')),
    (r'mlp/down/kernel$', ('mlp', 'embed')),
    (r'head/kernel$', ('embed', 'vocab')),
    # Biases follow their kernel's output split; q/k norms span a head.
    (r'attn/(query|key|value)/bias$', ('heads', 'kv')),
    (r'mlp/(gate|up)/bias$', ('mlp',)),
    (r'attn/(query|key)_norm/scale$', ('kv',)),
    (r'norm/scale$', ('embed',)),
)
# Any Dense or Conv kernel [..., in, out]: FSDP only, its input features
# over `fsdp`. A path does not tell which dimensions of consecutive layers
# meet, and a contracted dimension split two ways (one layer's outputs over
# `tensor`, the next one's inputs over `fsdp`) miscompiled in XLA's
# partitioner (jax 0.10.2: wrong gradients through a ReLU); the LM's rules
# split every such pair alike. Biases and norms stay replicated.
GENERIC_RULES: Rules = ((r'kernel$', ('embed', None)),)
RULES: Rules = LM_RULES + GENERIC_RULES

LOGICAL_AXES: Mapping[str, Any] = {
    'batch': BATCH_AXES, 'embed': FSDP, 'vocab': TENSOR, 'heads': TENSOR,
    'mlp': TENSOR, 'kv': None}


def mesh_sizes(mesh_shape: Mapping[str, int] | None, num_devices: int
               ) -> tuple[int, ...]:
  """Sizes of `MESH_AXES` from a partial dict; missing axes are 1, one axis
  may be -1 (the devices left). Their product must be `num_devices`."""
  shape = dict(mesh_shape or {DATA: -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f'unknown mesh axes {sorted(unknown)}; valid: {MESH_AXES}')
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'mesh {shape}: sizes must be positive, and at most '
                     'one of them -1 (the devices left)')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes and num_devices % known == 0:
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'mesh {shape} does not fit {num_devices} devices: the '
                     f'sizes must multiply to {num_devices} (or set one to -1)')
  return tuple(sizes)


def path_str(path) -> str:
  """'params/blocks_0/attn/query/kernel' for a pytree key path."""
  def name(k):
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return '/'.join(name(k) for k in path)


def logical_axes(path: str, ndim: int, rules: Rules) -> tuple:
  """The logical axis of every dimension of the leaf at `path` (None:
  unnamed); all None when no rule matches or the leaf has fewer
  dimensions than its rule (e.g. factored optimizer statistics)."""
  for pattern, axes in rules:
    if re.search(pattern, path):
      if len(axes) > ndim:
        break
      return (None,) * (ndim - len(axes)) + tuple(axes)
  return (None,) * ndim


def partition_spec(shape: Sequence[int], axes: Sequence[str | None],
                   mesh_shape: Mapping[str, int],
                   logical: Mapping[str, Any] = LOGICAL_AXES) -> P:
  """Logical axes -> PartitionSpec: each dimension over the mesh axes its
  logical axis maps to, keeping those that divide it (cumulatively) and are
  not yet used by an earlier dimension."""
  used, spec = set(), []
  for size, name in zip(shape, axes):
    targets = logical.get(name) if name else None
    if isinstance(targets, str):
      targets = (targets,)
    chosen, split = [], 1
    for axis in targets or ():
      n = mesh_shape[axis]
      if n > 1 and axis not in used and size % (split * n) == 0:
        chosen.append(axis)
        split *= n
    used.update(chosen)
    spec.append(None if not chosen else
                chosen[0] if len(chosen) == 1 else tuple(chosen))
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


class ShardedParallel:
  """Places values on a `MESH_AXES` mesh by rules and runs steps over it.

  The methods mirror `DataParallel`'s, so the training loop drives either:
  `place` (alias `replicate`) the train state and the teacher's variables,
  `shard` each batch, `wrap` a step, `to_host` (alias `unreplicate`) to read
  results.
  """
  kind = 'sharded'

  def __init__(self, mesh_shape: Mapping[str, int] | None = None,
               rules: Rules = RULES,
               logical: Mapping[str, Any] = LOGICAL_AXES,
               devices: Sequence[jax.Device] | None = None):
    devices = list(devices or jax.devices())
    sizes = mesh_sizes(mesh_shape, len(devices))
    self.mesh = jax.make_mesh(sizes, MESH_AXES, devices=devices,
                              axis_types=(AxisType.Auto,) * len(MESH_AXES))
    self.rules, self.logical = tuple(rules), dict(logical)
    self._batch = NamedSharding(self.mesh, P(BATCH_AXES))

  @property
  def batch_shards(self) -> int:
    return self.mesh.shape[DATA] * self.mesh.shape[FSDP]

  def check_batch_size(self, global_batch: int) -> int:
    """Returns this process's batch; the global batch must split over
    data x fsdp, and so must the processes (each feeds its own rows)."""
    if self.batch_shards % jax.process_count():
      raise ValueError(
          f'data x fsdp = {self.batch_shards} (mesh {dict(self.mesh.shape)}) '
          f'does not split over {jax.process_count()} processes; make it a '
          'multiple of the process count')
    if global_batch % self.batch_shards:
      raise ValueError(
          f'batch size {global_batch} is not divisible by data x fsdp = '
          f'{self.batch_shards} (mesh {dict(self.mesh.shape)}); choose a '
          f'multiple of {self.batch_shards}')
    return global_batch // jax.process_count()

  def spec(self, path: str, shape: Sequence[int]) -> P:
    axes = logical_axes(path, len(shape), self.rules)
    return partition_spec(shape, axes, self.mesh.shape, self.logical)

  def shardings(self, tree):
    """A NamedSharding per leaf (arrays, tracers or ShapeDtypeStructs)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(self.mesh,
                                   self.spec(path_str(p), np.shape(x))),
        tree)

  def place(self, tree):
    """`tree` (host or single-device values, the same on every process)
    split over the mesh by the rules; a leaf already laid out so (read
    onto the mesh: `kd.runs.load_variables` with `shardings`) is kept as
    it is, never gathered to the host."""
    def put(x, sharding):
      if isinstance(x, jax.Array) and isinstance(
          x.sharding, NamedSharding) and x.sharding.mesh == self.mesh and (
              x.sharding.is_equivalent_to(sharding, x.ndim)):
        return x
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding,
                                          lambda index: x[index])
    return jax.tree.map(put, tree, self.shardings(tree))

  replicate = place  # DataParallel's name, used by kd.loop.

  def shard(self, batch):
    """This process's part of a global batch, split over data x fsdp."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self._batch, x),
        batch)

  def prefetch(self, batches, lead: int = 0, size: int = 2):
    """`batches` placed on the mesh (`shard`) `size` ahead of their use."""
    if lead:
      raise ValueError("parallel='sharded' takes one batch per step: set "
                       'steps_per_dispatch=1 and train runs one at a time')
    return data_parallel.ahead(map(self.shard, batches), size)

  def to_host(self, tree):
    """Numpy copies; an array split across processes is gathered from all
    of them (a collective: call it on every process)."""
    def get(x):
      if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      if x.is_fully_addressable:
        return np.asarray(x)
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(get, tree)

  unreplicate = to_host  # DataParallel's name, used by kd.loop.

  def host_sum(self, trees: list):
    """One host copy of the sum of several steps' metrics
    (`DataParallel.host_sum`)."""
    return data_parallel.tree_sum([self.to_host(t) for t in trees])

  def wrap(self, step: Callable, num_replicated: int = 0,
           donate_first: bool = True, lead: int = 0) -> Callable:
    """Compiles `step(*args, batch)` (a per-shard step of `kd.steps`, or a
    global-batch one) as one program over the mesh. The last argument is
    the batch, split over data x fsdp; the others keep the layout `place`
    gave them (so `num_replicated`, DataParallel's count of them, is not
    needed). Outputs take the rules' layout (the new state where the old
    one was), so steps chain without moving data."""
    del num_replicated
    if lead:
      raise ValueError("parallel='sharded' takes one batch per step: set "
                       'steps_per_dispatch=1 and train runs one at a time')

    def global_step(*args):
      *rest, batch = args
      batch = jax.lax.with_sharding_constraint(
          batch, jax.tree.map(lambda _: self._batch, batch))
      # Binds AXIS with size 1: the global batch is the one shard.
      out = jax.vmap(step, in_axes=None, axis_name=AXIS, axis_size=1)(
          *rest, batch)
      out = jax.tree.map(lambda x: x[0], out)
      return jax.lax.with_sharding_constraint(out, self.shardings(out))

    return jax.jit(global_step, donate_argnums=(0,) if donate_first else ())


def create(config) -> DataParallel | ShardedParallel:
  """The parallelism `config.parallel` names: 'pmap' or 'mesh' (data
  parallel, `kd.parallel`) or 'sharded' over `config.mesh` (default all
  devices on `data`) with `RULES`."""
  if config.parallel not in KINDS:
    raise ValueError(f'unknown parallel kind {config.parallel!r}; valid: '
                     f'{KINDS}')
  if config.parallel == 'sharded':
    if config.distill.teacher.model_shards > 1:
      raise ValueError("distill.teacher.model_shards is for parallel='mesh'; "
                       "with parallel='sharded' the teacher is split by the "
                       "mesh's fsdp and tensor axes (config.mesh)")
    shape = dict(config.get('mesh') or {}) or None
    try:
      return ShardedParallel(shape)
    except ValueError as e:  # A bad shape: one line from kd.main.
      raise ConfigError(
          f'config.mesh: {e}; config.mesh.data is -1 (the devices '
          'left) unless set, so give it a size with another -1, e.g. '
          '--config.mesh.data=1 --config.mesh.fsdp=-1') from None
  return DataParallel(config.parallel,
                      model_shards=config.distill.teacher.model_shards)
