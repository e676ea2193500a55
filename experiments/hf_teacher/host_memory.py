"""Peak host memory of loading a large teacher: to the host first, or read
straight onto the mesh (`parallel='sharded'`, `kd.runs.load_variables`
with shardings).

  python -m experiments.hf_teacher.host_memory [--dir=/tmp/kd_host_memory] \
      [--devices=8] [--mesh=fsdp=4,tensor=2] [--optimizer | --hf]

Writes, once, a random-init teacher of SmolLM2-135M's shape (d 576, 30
layers, 9 query / 3 key-value heads, MLP 1536, vocabulary 49,152, tied
embeddings: 134,515,008 parameters, 538 MB in float32) as the run
directory `python -m kd.convert --from=hf` writes (config.json,
checkpoints/0 with the variables only; `--optimizer`: with Adam's two
moments too, as a teacher trained by kd leaves its checkpoint; `--hf`: as
a Hugging Face llama folder DIR_hf converted by `kd.convert --from=hf`,
whose peak RSS is printed beside that of `--describe` on the same folder,
which reads no weights). Then each
way of loading it runs in a fresh process on `--devices` simulated CPU
devices, meshed as `--mesh`:

  host  the checkpoint read whole to host NumPy (`load_variables` without
        shardings, as every run loaded a teacher before), then split over
        the mesh (`ShardedParallel.place`);
  mesh  each device reads its own slice of each array from the files
        (`load_variables(..., shardings)`, an orbax partial restore with a
        sharded target), only the variables.

and reports the rise of the process's peak resident memory (VmHWM) over
its resident memory just before loading, next to the bytes the mesh then
holds. On a CPU the "devices" are host memory, so the placed model itself
counts in the peak: what a way costs beyond it is the excess column (on an
accelerator only that excess is host memory).
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

flags.DEFINE_string('dir', '/tmp/kd_host_memory', 'Where the teacher run '
                    'is written (once; reused when present).')
flags.DEFINE_integer('devices', 8, 'Simulated CPU devices.')
flags.DEFINE_string('mesh', 'fsdp=4,tensor=2', 'Mesh axis sizes.')
flags.DEFINE_bool('optimizer', False, "Save Adam's moments in the "
                  'checkpoint too (a teacher trained by kd).')
flags.DEFINE_bool('hf', False, 'Write the teacher as a Hugging Face folder '
                  '(DIR_hf) and convert it with `kd.convert --from=hf` '
                  '(its peak RSS printed) instead of writing the run.')
flags.DEFINE_string('measure', '', 'Internal: host or mesh, in this process.')
FLAGS = flags.FLAGS

# SmolLM2-135M's config.json in kd's terms (kd.convert --from=hf --describe).
SHAPE = dict(d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
             mlp_hidden=1536, max_len=2048)
VOCAB = 49_152


def _status(field: str) -> int:
  """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def _model():
  from kd import models  # pylint: disable=import-outside-toplevel
  return models.create('transformer_lm', VOCAB, **SHAPE)


def _abstract(model):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), np.zeros((1, 8), np.int32), train=False))


def _random_variables():
  """Random normal(0, 0.02) weights, leaf by leaf (no 135M-parameter init
  program to compile)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda a: (rng.standard_normal(a.shape, np.float32) * 0.02),
      _abstract(_model()))


def write_hf(hf_dir: str) -> None:
  """The random teacher as a Hugging Face llama folder (config.json,
  model.safetensors), as save_pretrained lays it out."""
  from kd.convert import hf  # pylint: disable=import-outside-toplevel
  from kd.export import hf as hf_export  # pylint: disable=import-outside-toplevel
  params = _random_variables()['params']
  cfg = hf.to_hf_config('transformer_lm', dict(SHAPE), VOCAB)
  hf_export.write_folder(hf_dir, {'config.json': json.dumps(cfg)}, dict(
      hf.hf_tensors('transformer_lm', dict(SHAPE), params, VOCAB)))


def write_teacher(run_dir: str, optimizer: bool) -> None:
  """The random teacher saved as a run directory."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from kd import checkpoint  # pylint: disable=import-outside-toplevel
  from kd.convert import common  # pylint: disable=import-outside-toplevel
  variables = _random_variables()
  config = common.run_config('transformer_lm', 'kd_pystdlib',
                             dict(SHAPE))
  if not optimizer:
    common.write_run(run_dir, variables, config, {'converted': True})
    return
  zeros = jax.tree.map(np.zeros_like, variables['params'])
  mngr = checkpoint.manager(os.path.join(run_dir, 'checkpoints'))
  checkpoint.save(mngr, 0, {
      'step': np.int32(0), 'params': variables['params'], 'model_state': {},
      'opt_state': {'mu': zeros, 'nu': zeros}})
  mngr.wait_until_finished()
  mngr.close()


def measure(run_dir: str, way: str, mesh: dict) -> dict:
  """Loads the teacher of `run_dir` one `way`; the memory figures."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from kd import runs, sharding  # pylint: disable=import-outside-toplevel
  parallel = sharding.ShardedParallel(mesh)
  abstract = _abstract(_model())
  shardings = parallel.shardings(abstract)
  before = _status('VmRSS')
  if way == 'host':
    variables, _ = runs.load_variables(run_dir, abstract, 'teacher')
  else:
    variables, _ = runs.load_variables(run_dir, abstract, 'teacher',
                                       shardings)
  placed = parallel.place(variables)
  jax.block_until_ready(placed)
  peak = _status('VmHWM')
  leaves = jax.tree.leaves(placed)
  return {
      'way': way, 'rss_before': before, 'peak': peak,
      'peak_rise': peak - before,
      'param_bytes': sum(int(np.prod(x.shape)) * x.dtype.itemsize
                         for x in leaves),
      'largest_tensor_bytes': max(int(np.prod(x.shape)) * x.dtype.itemsize
                                  for x in leaves),
      'mesh_bytes': sum(s.data.nbytes for x in leaves
                        for s in x.addressable_shards),
      'largest_shard_bytes': max(s.data.nbytes for x in leaves
                                 for s in x.addressable_shards),
      'devices': jax.device_count(), 'mesh': dict(parallel.mesh.shape)}


def _mesh(text: str) -> dict:
  return {k: int(v) for k, v in (kv.split('=') for kv in text.split(','))}


def main(argv):
  del argv
  if FLAGS.measure:
    print(json.dumps(measure(FLAGS.dir, FLAGS.measure, _mesh(FLAGS.mesh))))
    return
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      f'--xla_force_host_platform_device_count={FLAGS.devices}'))
  if FLAGS.hf and not os.path.isdir(FLAGS.dir):
    hf_dir = FLAGS.dir + '_hf'
    if not os.path.isdir(hf_dir):
      print(f'writing the teacher as an HF folder to {hf_dir}', flush=True)
      subprocess.run([sys.executable, '-c', (
          'from experiments.hf_teacher import host_memory as h; '
          f'h.write_hf({hf_dir!r})')], env=env, check=True)
    # Each command in a child of its own: its peak RSS alone. --describe
    # reads config.json only: what imports and the abstract model take.
    for args in (['--describe', hf_dir], [hf_dir, f'--out={FLAGS.dir}']):
      command = [sys.executable, '-m', 'kd.convert', '--from=hf', *args]
      out = subprocess.run([sys.executable, '-c', (
          'import resource, subprocess, sys; subprocess.run('
          f'{command!r}, check=True, capture_output=True); print(resource.'
          'getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')],
                           env=env, check=True, capture_output=True, text=True)
      print(f'python -m kd.convert --from=hf {" ".join(args)}: peak RSS '
            f'{int(out.stdout.split()[-1]) / 1024:,.0f} MiB')
  if not os.path.isdir(FLAGS.dir):
    print(f'writing the teacher to {FLAGS.dir}', flush=True)
    subprocess.run([sys.executable, '-c', (
        'import sys; from experiments.hf_teacher import host_memory as h; '
        f'h.write_teacher({FLAGS.dir!r}, {FLAGS.optimizer})')],
                   env=env, check=True)
  rows = []
  for way in ('host', 'mesh'):  # A fresh process for each.
    out = subprocess.run(
        [sys.executable, '-m', 'experiments.hf_teacher.host_memory',
         f'--dir={FLAGS.dir}', f'--mesh={FLAGS.mesh}', f'--measure={way}'],
        env=env, check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  mb = lambda b: f'{b / 2**20:,.0f}'
  r = rows[0]
  print(f'teacher: {r["param_bytes"] / 4:,.0f} parameters, '
        f'{mb(r["param_bytes"])} MiB float32 (largest tensor '
        f'{mb(r["largest_tensor_bytes"])} MiB, largest shard '
        f'{mb(r["largest_shard_bytes"])} MiB); {r["devices"]} CPU devices, '
        f'mesh {r["mesh"]}' + (", checkpoint with Adam's moments"
                               if FLAGS.optimizer else ''))
  print('| load | peak RSS rise MiB | held on the mesh MiB | excess MiB | '
        'rise / parameter bytes |')
  print('|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["way"]} | {mb(r["peak_rise"])} | {mb(r["mesh_bytes"])} | '
          f'{mb(r["peak_rise"] - r["mesh_bytes"])} | '
          f'{r["peak_rise"] / r["param_bytes"]:.2f} |')


if __name__ == '__main__':
  app.run(main)
