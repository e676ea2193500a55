"""Test accuracy of every generation of a born-again pipeline and of their
ensembles (BANE: the mean of the distributions of generations 1..k, and of
0..k).

  python -m experiments.born_again.score RUN_DIR [RUN_DIR ...]

Writes `RUN_DIR/generations.json` and prints one JSON object per run.
"""
import json
import os
import sys


from kd import config as kd_config
from kd import runs
from kd import steps
from kd import variant
from kd.parallel import DataParallel


def score_generations(run_dir: str) -> dict:
  pipeline = runs.saved_config(run_dir)
  if pipeline is None or 'stage_order' not in pipeline:
    raise FileNotFoundError(f'{run_dir} is not a pipeline directory written '
                            'by kd.main (no config.json with stage_order)')
  stage_order = pipeline['stage_order']
  dirs = kd_config.stage_dirs(pipeline, run_dir)
  loaded = [runs.load_run(dirs[s]) for s in stage_order]
  config = loaded[0][0]
  gen_models = tuple(m for _, m, _, _ in loaded)
  parallel = DataParallel('pmap')

  def logits_fn(variables, x):
    out = {s: m.apply(v, x, train=False)[0]
           for s, m, v in zip(stage_order, gen_models, variables)}
    gens = list(out.values())
    for k in range(1, len(gens)):
      # BANE over the born-again generations 1..k, and with gen0 too.
      out[f'ensemble_gen0-{k}'] = steps.ensemble(gens[:k + 1])
      if k > 1:
        out[f'ensemble_gen1-{k}'] = steps.ensemble(gens[1:k + 1])
    return out

  eval_fn = parallel.wrap(steps.make_named_eval_step(logits_fn), 1,
                          donate_first=False)
  result = variant.named_test_rates(config, parallel, eval_fn, (
      parallel.replicate(tuple(v for _, _, v, _ in loaded)),))
  runs.write_json(os.path.join(run_dir, 'generations.json'), result)
  return result


def main(argv):
  for run_dir in argv[1:]:
    print(json.dumps({run_dir: score_generations(run_dir)}, sort_keys=True))


if __name__ == '__main__':
  main(sys.argv)
