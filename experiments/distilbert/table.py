"""The BERT -> DistilBERT table and plot from the runs of
launch/specs/distilbert.py (configs/bert/distilbert.py, one pipeline per
seed sharing the pretraining stages):

  python -m experiments.distilbert.table runs/distilbert \
      --out=experiments/distilbert

Per model: BBC News test accuracy (mean ± std over the seeds), parameters,
batch-1 latency of the jitted float32 classifier on one test row (measured
here, every model in this process one after another, on this machine's
CPU), its ratio to the teacher's, and the masked-LM accuracy of the
pretraining stage it starts from. Then the DistilBERT claim at this scale:
the share of the teacher's accuracy each student keeps, and its speed-up.
Then the edge files of the first seed's fine-tuned teacher and DistilBERT
student (`kd.export.encoder`: TFLite float32 and dynamic-range int8, ONNX
float32, written into each stage's folder, beside its tokenizer.json): size, test
accuracy of the file against JAX's, the largest logit difference and
batch-1 latency. Writes table.md, export.md and accuracy_vs_latency.png
into --out.
"""
import json
import os
import statistics

from absl import app
from absl import flags
import jax
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from kd import latency
from kd import runs
from kd import tables
from kd.data import classify
from kd.data import mlm
from kd.export import encoder
from kd.export import table as export_table

# (fine-tune stage, its pretraining stage, what it is)
MODELS = (
    ('teacher_ft', 'teacher_mlm', 'BERT teacher'),
    ('distil_ft', 'student_distil', 'DistilBERT student'),
    ('distil_kd_ft', 'student_distil', 'DistilBERT student + task KD'),
    ('mlm_only_ft', 'student_mlm_only', 'student, MLM pretraining alone'),
    ('scratch_ft', '', 'student, no pretraining'),
)


def pipelines(root: str) -> list[str]:
  """Finished pipeline runs under `root` (the shared pretraining stages'
  folders are stages, not pipelines)."""
  found = []
  for d in tables.find_runs(root):
    with open(os.path.join(d, 'config.json')) as f:
      if 'stages' in json.load(f):
        found.append(d)
  if not found:
    raise SystemExit(f'no finished pipeline of configs/bert/distilbert.py '
                     f'under {root}: run launch/specs/distilbert.py first')
  return found


def stage_dir(pipeline: str, stage: str) -> str:
  with open(os.path.join(pipeline, 'config.json')) as f:
    kept = json.load(f).get('stage_dirs') or {}
  return kept.get(stage) or os.path.join(pipeline, stage)


def measured_latency_ms(run_dir: str) -> float:
  """Batch-1 latency of the run's classifier on its first test row."""
  config, model, variables, _ = runs.load_run(run_dir)
  tok = mlm.WordPieceTokenizer.load(run_dir)
  d = config.data
  row = next(classify.classify_eval_batches(
      d.name, batch_size=1, seq_len=d.seq_len, tok=tok,
      data_dir=d.data_dir or None))['image']
  fn = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
  return latency.latency_ms(fn, row, warmup=20, runs=200)


def collect(root: str) -> list[dict]:
  found = pipelines(root)
  rows = []
  for stage, pretraining, what in MODELS:
    summaries = [runs.summary(stage_dir(p, stage)) for p in found]
    accs = [s['test_accuracy'] for s in summaries]
    mlm_acc = (runs.summary(stage_dir(found[0], pretraining))['test_accuracy']
               if pretraining else None)
    rows.append(dict(stage=stage, what=what, accs=accs,
                     params=summaries[0]['params'], mlm=mlm_acc,
                     latency=measured_latency_ms(stage_dir(found[0], stage))))
  return rows


# (stage, quantize, format) of the edge files
EXPORTS = tuple((stage, q, f) for stage in ('teacher_ft', 'distil_ft')
                for q, f in (('none', 'tflite'), ('dynamic', 'tflite'),
                             ('none', 'onnx')))


def exports(root: str) -> str:
  """Exports the first pipeline's fine-tuned teacher and student; returns
  their edge table."""
  first = pipelines(root)[0]
  what = {stage: name for stage, _, name in MODELS}
  rows = []
  for stage, quantize, fmt in EXPORTS:
    run = stage_dir(first, stage)
    name = 'float32' if quantize == 'none' else quantize
    path = os.path.join(run, f'classifier_{name}.{fmt}')
    side = encoder.export(run, path, quantize=quantize, format=fmt)
    print(f'{stage}: {path} ({side["bytes"]:,} bytes)', flush=True)
    [row] = export_table.rows([path + '.json'])
    rows.append({**row, 'model': f'{what[stage]} (`{stage}`)',
                 'quantize': 'int8 (dynamic range)' if quantize == 'dynamic'
                             else row['quantize']})
  return export_table.markdown(rows) + '\n'


def _pm(values, scale=100.0) -> str:
  mean = statistics.mean(values) * scale
  if len(values) < 2:
    return f'{mean:.1f}'
  return f'{mean:.1f} ± {statistics.stdev(values) * scale:.1f}'


def markdown(rows: list[dict]) -> str:
  teacher = rows[0]
  t_acc = statistics.mean(teacher['accs'])
  n = len(teacher['accs'])
  lines = [f'| model | test accuracy (%, {n} seeds) | params | '
           'batch-1 latency (ms) | speed-up vs teacher | masked-LM accuracy (%) '
           '| keeps (% of teacher) |', '|---|---|---|---|---|---|---|']
  for r in rows:
    keeps = 100 * statistics.mean(r['accs']) / t_acc
    lines.append(
        f"| {r['what']} (`{r['stage']}`) | {_pm(r['accs'])} | "
        f"{int(r['params']):,} | {r['latency']:.3f} | "
        f"{teacher['latency'] / r['latency']:.2f}x | "
        + (f"{100 * r['mlm']:.1f}" if r['mlm'] is not None else '-')
        + f' | {keeps:.1f} |')
  return '\n'.join(lines) + '\n'


def plot(rows: list[dict], path: str) -> None:
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    accs = [100 * a for a in r['accs']]
    ax.errorbar(r['latency'], statistics.mean(accs),
                yerr=statistics.stdev(accs) if len(accs) > 1 else 0,
                fmt='o', capsize=3, label=r['what'])
  ax.set_xlabel('batch-1 latency (ms, CPU)')
  ax.set_ylabel('BBC News test accuracy (%)')
  ax.set_title('BERT -> DistilBERT in miniature')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m experiments.distilbert.table ROOT '
                         '[--out=DIR]')
  out = flags.FLAGS.out or argv[1]
  rows = collect(argv[1])
  text = markdown(rows)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write(text)
  plot(rows, os.path.join(out, 'accuracy_vs_latency.png'))
  print(text)
  edge = exports(argv[1])
  with open(os.path.join(out, 'export.md'), 'w') as f:
    f.write(edge)
  print(edge)
  print(f'wrote {out}/table.md, export.md and accuracy_vs_latency.png')


if __name__ == '__main__':
  # Defined when run, not on import (tests import this module beside
  # kd.export's command line, which has its own --out).
  flags.DEFINE_string('out', None, 'Folder of table.md and the plot '
                      '(default: ROOT).')
  app.run(main)
