"""Seconds of value + gradient of the RKD loss (`kd.losses.relations.rkd`),
its angle term from the Gram matrix (today's) vs from the normalised
differences (the form it replaced), side by side.

  python -m experiments.benchmark.rkd [--shapes=100x100x128,5x100x100x128] [--iters=10]

A shape is BxDsxDt (batch, student and teacher embedding sizes) or
RxBxDsxDt: R runs vmapped, as a vectorized group trains them (the MNIST-1D
Hinton sweep: B = 100, the MLP student's 100 and the CNN teacher's 128, 5
seeds). The difference form normalises all B^2 differences and contracts
them, O(B^3 D); the Gram form is O(B^2 D + B^3). The two programs' calls
take turns; prints the median seconds of each and their ratio.
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from kd.losses import norms, relations

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_list('shapes', ['100x100x128', '5x100x100x128', '128x64x64',
                               '256x128x128'], 'BxDsxDt or RxBxDsxDt.')
  flags.DEFINE_integer('iters', 10, 'Timed calls of each program.')


def difference_angles(e):
  """cos of the angle at j between i and k, [j, i, k], as RKD's reference
  code computes it: from the B^2 normalised differences, O(B^3 D)."""
  diff = norms.normalize(e[None, :, :] - e[:, None, :])
  return jnp.einsum('jid,jkd->jik', diff, diff)


def difference_rkd(s, t, distance_weight=25.0, angle_weight=50.0):
  """`relations.rkd` with `difference_angles`."""
  s, t = relations._flat(s), relations._flat(t, teacher=True)  # pylint: disable=protected-access
  loss_d = relations._smooth_l1(relations._normalized_distances(s),  # pylint: disable=protected-access
                                relations._normalized_distances(t))  # pylint: disable=protected-access
  loss_a = relations._smooth_l1(difference_angles(s), difference_angles(t))  # pylint: disable=protected-access
  return distance_weight * loss_d + angle_weight * loss_a


def program(loss, runs):
  fn = jax.value_and_grad(loss)
  return jax.jit(jax.vmap(fn) if runs else fn)


def main(argv):
  del argv
  print('| runs x batch x D_s x D_t | difference form ms | Gram form ms | '
        'speed-up |\n|---|---|---|---|')
  for shape in FLAGS.shapes:
    dims = [int(d) for d in shape.split('x')]
    runs, (b, ds, dt) = (dims[0], dims[1:]) if len(dims) == 4 else (0, dims)
    lead = (runs,) if runs else ()
    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(*lead, b, ds)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(*lead, b, dt)), jnp.float32)
    fns = {'difference': program(difference_rkd, runs),
           'gram': program(relations.rkd, runs)}
    times = {k: [] for k in fns}
    for f in fns.values():
      jax.block_until_ready(f(s, t))
    for _ in range(FLAGS.iters):
      for k, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(s, t))
        times[k].append(time.perf_counter() - t0)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(f'| {shape} | {ms["difference"]:.1f} | {ms["gram"]:.1f} | '
          f'{ms["difference"] / ms["gram"]:.2f}x |', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
