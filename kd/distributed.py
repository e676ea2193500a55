"""Multi-controller start-up on JAX's own runtime (`jax.distributed`).

Explicit (local runs, tests): set KD_COORDINATOR (host:port), KD_NUM_PROCESSES
and KD_PROCESS_ID. Under SLURM's `srun` with several tasks, or on a multi-host
TPU VM, `jax.distributed.initialize()` takes no arguments and finds its peers
itself. A single process needs nothing.
"""
import os

import jax


def initialize() -> None:
  if os.environ.get('KD_COORDINATOR'):
    # CPU devices need gloo for cross-process collectives; other backends
    # ignore this setting. (Querying the backend here would start it too early.)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        os.environ['KD_COORDINATOR'],
        num_processes=int(os.environ['KD_NUM_PROCESSES']),
        process_id=int(os.environ['KD_PROCESS_ID']))
  elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or os.environ.get(
      'TPU_WORKER_HOSTNAMES', '').count(',') > 0:
    jax.distributed.initialize()
