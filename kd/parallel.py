"""Two wrappers for one per-shard step: `jax.pmap` and `jax.shard_map`.

A step function `f(*replicated_args, batch)` written with collectives over
`AXIS` is run data-parallel: the batch is split across devices, the
other arguments (train state, teacher variables) are replicated.
"""
import collections
import itertools
from typing import Callable

from flax import jax_utils
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from kd import names

AXIS = 'batch'  # The data-parallel axis every step's collectives use.
MODEL_AXIS = 'model'  # Splits a large teacher's parameters (mesh only).
KINDS = names.DATA_PARALLEL


def tree_sum(trees: list):
  """Leafwise sum of host (numpy) trees of one structure."""
  return jax.tree.map(lambda *xs: np.sum(xs, 0), *trees)


def ahead(iterator, size: int):
  """The items of `iterator`, each taken `size` items before it is used."""
  queue = collections.deque(itertools.islice(iterator, size))
  while queue:
    yield queue.popleft()
    queue.extend(itertools.islice(iterator, 1))


def _batch_spec(lead: int) -> P:
  return P(*(None,) * lead, AXIS)


class DataParallel:
  """Places data and runs steps on all devices with one of `KINDS`.

  'pmap': replicated values carry a leading local-device axis.
  'mesh': values are global `jax.Array`s on a mesh over all devices (every
  process's devices), replicated (`P()`) or batch-sharded (`P(AXIS)`).
  With `model_shards` > 1 the mesh is 2-D, `AXIS x MODEL_AXIS`: steps stay
  data-parallel over `AXIS` (replicated over `MODEL_AXIS`), and a teacher
  too large for one device is split over `MODEL_AXIS` (`sharded_apply`).
  """

  def __init__(self, kind: str = 'pmap', num_local_devices: int | None = None,
               model_shards: int = 1):
    if kind not in KINDS:
      raise ValueError(f'unknown parallel kind {kind!r}; valid: {KINDS}')
    if model_shards > 1 and kind != 'mesh':
      raise ValueError(f'a teacher split over {model_shards} devices needs '
                       "parallel='mesh' (pmap replicates every argument)")
    self.kind = kind
    self.devices = jax.local_devices()[:num_local_devices]
    # pmap given `devices` runs its collectives over those alone, so name
    # them only to use a subset of a single process's devices.
    self._pmap_devices = None if num_local_devices is None else self.devices
    self.model_shards = model_shards
    if kind == 'mesh':
      devices = (jax.devices() if num_local_devices is None else self.devices)
      if len(devices) % model_shards:
        raise ValueError(f'{len(devices)} devices cannot be split into '
                         f'groups of model_shards={model_shards}')
      # Auto axes: XLA partitions a sharded teacher's ops by itself.
      self.mesh = jax.make_mesh((len(devices) // model_shards, model_shards),
                                (AXIS, MODEL_AXIS), devices=devices,
                                axis_types=(AxisType.Auto,) * 2)
      self._replicated = NamedSharding(self.mesh, P())
      self._sharded = NamedSharding(self.mesh, P(AXIS))

  @property
  def local_devices(self) -> int:
    return len(self.devices)

  def check_batch_size(self, global_batch: int) -> int:
    """Returns this process's batch; global batch must split over devices."""
    total = self.local_devices * jax.process_count() // self.model_shards
    if global_batch % total:
      raise ValueError(
          f'batch size {global_batch} is not divisible by the {total} '
          f'devices; choose a multiple of {total}')
    return global_batch // jax.process_count()

  def replicate(self, tree):
    if self.kind == 'pmap':
      n = self.local_devices
      stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * n), tree)
      if jax.process_count() == 1:
        # Placed as the step returns its outputs: from a pmap identity, the
        # step compiled again on its second call (the first call's inputs
        # came from the identity, the second's from the step).
        return jax.device_put(stacked, NamedSharding(
            jax.sharding.Mesh(np.array(self.devices), (AXIS,)), P(AXIS)))
      return jax.pmap(lambda t: t, devices=self._pmap_devices)(stacked)
    return jax.device_put(tree, self._replicated)

  def shard(self, batch, lead: int = 0):
    """Places this process's part of a global batch on the devices; its
    examples are on axis `lead` (after `lead` axes of steps or runs, see
    `kd.steps.multi_step` and `kd.steps.vectorized`)."""
    if self.kind == 'pmap':
      n = self.local_devices
      return jax.tree.map(lambda x: np.moveaxis(np.reshape(
          x, x.shape[:lead] + (n, -1) + x.shape[lead + 1:]), lead, 0), batch)
    sharding = NamedSharding(self.mesh, _batch_spec(lead))
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def prefetch(self, batches, lead: int = 0, size: int = 2):
    """`batches` placed on the devices (`shard`) `size` ahead of their use,
    so that their transfer overlaps the running step."""
    placed = (self.shard(batch, lead) for batch in batches)
    if self.kind == 'pmap':  # `shard` only splits them on the host.
      return jax_utils.prefetch_to_device(placed, size, self.devices)
    return ahead(placed, size)

  def unreplicate(self, tree):
    """One host (numpy) copy of a replicated value."""
    return self._host_copies([tree])[0]

  def host_sum(self, trees: list):
    """One host (numpy) copy of the sum of replicated values (the metrics
    of several steps), fetched together: adding them on the devices step
    by step cost a dispatch per metric and step."""
    return tree_sum(self._host_copies(trees))

  def _host_copies(self, trees: list) -> list:
    """The first local device's copy of each replicated tree, fetched
    together; not indexed on the device, which compiles per shape."""
    hosts = jax.device_get([jax.tree.map(lambda x: x.addressable_data(0), t)
                            for t in trees])
    if self.kind == 'pmap':  # Its shards keep the device axis.
      hosts = [jax.tree.map(lambda x: np.asarray(x[0]), t) for t in hosts]
    return hosts

  def wrap(self, step: Callable, num_replicated: int,
           donate_first: bool = True, lead: int = 0) -> Callable:
    """Compiles `step(*replicated, batch)` for this kind of parallelism;
    the batch's examples are on axis `lead` (see `shard`)."""
    donate = (0,) if donate_first else ()
    if self.kind == 'pmap':
      return jax.pmap(step, axis_name=AXIS, donate_argnums=donate,
                      devices=self._pmap_devices)
    # check_vma=False: with it, jax.grad of replicated params would insert
    # its own psum, so the step would no longer mean the same under pmap.
    mapped = jax.shard_map(
        step, mesh=self.mesh,
        in_specs=(P(),) * num_replicated + (_batch_spec(lead),),
        out_specs=P(),
        check_vma=False)
    return jax.jit(mapped, donate_argnums=donate)

  def model_sharding(self, tree):
    """Per leaf: split over `MODEL_AXIS` along its largest dimension that
    divides evenly, replicated if none does."""
    def spec(x):
      dims = [d for d in np.argsort(np.shape(x))[::-1]
              if np.shape(x)[d] % self.model_shards == 0]
      if not dims:
        return NamedSharding(self.mesh, P())
      axes = [None] * np.ndim(x)
      axes[dims[0]] = MODEL_AXIS
      return NamedSharding(self.mesh, P(*axes))
    return jax.tree.map(spec, tree)

  def sharded_apply(self, fn: Callable, variables):
    """(`fn(variables, x)` compiled for `variables` split over `MODEL_AXIS`
    and `x` and the outputs split over `AXIS`, partitioned by XLA; the
    variables placed so). Each device holds 1/model_shards of them."""
    shardings = self.model_sharding(variables)
    placed = jax.device_put(variables, shardings)
    return jax.jit(fn, in_shardings=(shardings, self._sharded),
                   out_shardings=self._sharded), placed
