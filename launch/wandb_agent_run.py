"""One run of a W&B sweep written by `launch.sweep --mode=wandb`.

The W&B agent starts, in kd's folder (`${args}`: the sweep's parameters),

  python -m launch.wandb_agent_run --spec=SPEC --root=ROOT \
      --arg=ARG --seed=S [--config.field=VALUE ...]

and this becomes the run that `launch.sweep` makes of the same argument,
grid point and seed in local mode: the same folder ROOT/NAME/<name> (one per
grid point, so a re-run resumes it), `sweep.json` and command, with the seed
in the config argument, where `get_config` reads it.
"""
import os
import sys

from launch import sweep


def parse(argv: list[str]) -> tuple[dict, tuple]:
  """(--spec, --root, --arg, --seed values; (field, value) overrides)."""
  named, overrides = {}, []
  for a in argv:
    key, eq, value = a.removeprefix('--').partition('=')
    if not a.startswith('--') or not eq:
      raise ValueError(f'expected --name=value, got {a!r}')
    if key.startswith('config.'):
      overrides.append((key, value))
    elif key in ('spec', 'root', 'arg', 'seed'):
      named[key] = value
    else:
      raise ValueError(f'unknown parameter {key!r}: sweep parameters are arg, '
                       'seed and config fields (config.x)')
  missing = {'spec', 'root', 'arg', 'seed'} - set(named)
  if missing:
    raise ValueError(f'missing {sorted(missing)}; the sweep.yaml of '
                     '`launch.sweep --mode=wandb` passes them')
  return named, tuple(sorted(overrides))


def main(argv: list[str]) -> None:
  named, overrides = parse(argv[1:])
  spec = sweep.load_spec(named['spec'])
  run = sweep.find_run(spec, named['root'], named['arg'], overrides,
                       named['seed'])
  sweep.describe(run)
  cmd = run.command(spec.CONFIG)
  print('$', ' '.join(cmd), flush=True)
  # The run replaces this process: the agent's SIGTERM reaches it directly.
  os.execv(cmd[0], cmd)


if __name__ == '__main__':
  main(sys.argv)
