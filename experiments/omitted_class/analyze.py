"""Omitted-class accuracy before and after bias correction (Hinton et al.
2015, section 3: raising the omitted class's bias).

  python -m experiments.omitted_class.analyze RUN_DIR [RUN_DIR ...]

For each run (a pipeline of experiments/omitted_class/config.py) and each
student: the omitted class's test accuracy and the overall test accuracy,
as trained, then with the class's logit raised by delta. Two choices of
delta: 'test-tuned' maximises overall test accuracy, as the paper did; 'prior'
is label-free: the smallest delta at which the student predicts the class
for a tenth of the (unlabelled) training inputs.
"""
import json
import statistics
import sys

import jax
import numpy as np

from kd import data
from kd import runs

DELTAS = np.arange(0.0, 30.0, 0.05)


def _logits(stage_dir: str):
  config, model, variables, _ = runs.load_run(stage_dir)
  apply = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  x_test, y_test = data.load_split(config.data.name, 'test')
  x_train, _ = data.load_split(config.data.name, 'train')
  return (np.asarray(apply(x_test)), y_test, np.asarray(apply(x_train)),
          int(config.data.exclude_classes[0]))


def analyze(stage_dir: str) -> dict:
  return bias_correction(*_logits(stage_dir))


def bias_correction(test, y, train, omit: int) -> dict:
  """Accuracies before and after raising logit `omit` by the two deltas."""

  def scores(delta):
    pred = (test + delta * (np.arange(test.shape[1]) == omit)).argmax(-1)
    return float(np.mean(pred[y == omit] == omit)), float(np.mean(pred == y))

  overall = [scores(d)[1] for d in DELTAS]
  tuned = float(DELTAS[int(np.argmax(overall))])
  share = [np.mean((train + d * (np.arange(train.shape[1]) == omit)).argmax(-1)
                   == omit) for d in DELTAS]
  prior = float(DELTAS[min(int(np.searchsorted(np.asarray(share) >= 0.1,
                                               True)), len(DELTAS) - 1)])
  (before, all_before), (after, all_after), (after_p, all_p) = (
      scores(0.0), scores(tuned), scores(prior))
  return {'omitted_class': omit, 'before': before, 'overall_before': all_before,
          'delta_test_tuned': tuned, 'after_test_tuned': after,
          'overall_after_test_tuned': all_after, 'delta_prior': prior,
          'after_prior': after_p, 'overall_after_prior': all_p}


def main(argv):
  results = {}
  for run in argv[1:]:
    for stage in ('student_kd', 'student_scratch'):
      results.setdefault(stage, []).append(analyze(f'{run}/{stage}'))
  fmt = lambda vals: (f'{100 * statistics.mean(vals):.1f} ± '
                      f'{100 * (statistics.stdev(vals) if len(vals) > 1 else 0):.1f}')
  print('| student | runs | omitted class: as trained | + bias (test-tuned) '
        '| + bias (prior) | overall: as trained | + bias (test-tuned) |')
  print('|---|---|---|---|---|---|---|')
  for stage, rows in results.items():
    col = lambda k: fmt([r[k] for r in rows])
    print(f'| {stage} | {len(rows)} | {col("before")} | '
          f'{col("after_test_tuned")} | {col("after_prior")} | '
          f'{col("overall_before")} | {col("overall_after_test_tuned")} |')
  print(json.dumps(results, indent=1))


if __name__ == '__main__':
  main(sys.argv)
