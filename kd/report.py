"""The comparison table printed at the end of a pipeline, and its PNG plot."""
import os

from kd import config as kd_config
from kd.logger import read_metrics

TFLITE_FORMATS = ('float32', 'fp16', 'dynamic', 'int8')


def _fmt(pattern: str, value) -> str:
  return '-' if value is None else pattern.format(value)


def table(summary: dict, stages: list[str]) -> str:
  """Markdown table: one row per stage, then its TFLite exports (language
  models: held-out bits per byte in place of accuracy)."""
  text = any(f'{s}/test_bits_per_byte' in summary for s in stages)
  metric, key, pattern = (('bits per byte', 'bits_per_byte', '{:.3f}') if text
                          else ('test accuracy', 'accuracy', '{:.2%}'))
  rows = [f'| model | {metric} | params | size (bytes) | '
          'agreement with teacher | batch-1 latency (ms) |',
          '|---|---|---|---|---|---|']

  def row(label, value, params, size, agree, latency):
    rows.append(f'| {label} | {_fmt(pattern, value)} | '
                f'{_fmt("{:,.0f}", params)} | {_fmt("{:,.0f}", size)} | '
                f'{_fmt("{:.2%}", agree)} | {_fmt("{:.3f}", latency)} |')

  for s in stages:
    get = lambda k, s=s: summary.get(f'{s}/{k}')
    params = get('params')
    row(f'{s} (JAX float32)', get(f'test_{key}'), params,
        None if params is None else 4 * params, get('teacher_agreement'),
        get('latency_ms'))
    for fmt in TFLITE_FORMATS:
      if get(f'tflite_{fmt}_bytes') is not None:
        row(f'{s} (TFLite {fmt})', get(f'tflite_{fmt}_{key}'), params,
            int(get(f'tflite_{fmt}_bytes')), None,
            get(f'tflite_{fmt}_latency_ms'))
  return '\n'.join(rows)


def curves(stage_dirs: dict) -> dict:
  """What `plot` draws from each stage's `metrics.jsonl`, read from the
  stage's own directory (`stage_dirs`: name -> directory, in stage order; a
  stage kept outside the pipeline, such as a teacher shared through
  `teacher_dir=`, included).

  Returns {'loss': {label: (steps, values)}, 'held_out': {label: (steps,
  values)}, 'metric': name}: the training loss of every stage (and its
  cross-entropy part where other terms add to it), and the held-out metric of
  every test during and at the end of training: `test_bits_per_byte` if any
  stage is a language model, else `test_accuracy`."""
  rows = {s: read_metrics(d) for s, d in stage_dirs.items()}
  text = any('test_bits_per_byte' in r for rs in rows.values() for r in rs)
  metric = 'test_bits_per_byte' if text else 'test_accuracy'
  out = {'loss': {}, 'held_out': {}, 'metric': metric}

  def series(rs, key):
    return [r['step'] for r in rs], [r[key] for r in rs]

  for s, rs in rows.items():
    train = [r for r in rs if 'loss' in r]
    if train:
      out['loss'][s] = series(train, 'loss')
      if 'ce' in train[0] and train[0]['ce'] != train[0]['loss']:
        out['loss'][f'{s} (CE part)'] = series(train, 'ce')
    held_out = [r for r in rs if metric in r]
    if held_out:
      out['held_out'][s] = series(held_out, metric)
  return out


def figure(stage_dirs: dict, summary: dict):
  """The `curves` of every stage (training loss; held-out accuracy, or bits
  per byte, against step) and the final held-out metric against parameters,
  in three panels of one matplotlib figure."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  data = curves(stage_dirs)
  metric = data['metric']
  label = 'bits per byte' if metric == 'test_bits_per_byte' else 'accuracy'
  fig, (ax_loss, ax_held, ax_size) = plt.subplots(1, 3, figsize=(16, 4))
  color = {s: f'C{i}' for i, s in enumerate(stage_dirs)}  # A stage's, in every panel.
  for name, (steps, values) in data['loss'].items():
    stage, part = name.removesuffix(' (CE part)'), name.endswith('(CE part)')
    ax_loss.plot(steps, values, '--' if part else '-', color=color[stage],
                 label=name)
  for name, (steps, values) in data['held_out'].items():
    ax_held.plot(steps, values, 'o-', markersize=3, color=color[name],
                 label=name)
  for s in stage_dirs:
    params, value = summary.get(f'{s}/params'), summary.get(f'{s}/{metric}')
    if params is not None and value is not None:
      ax_size.scatter(params, value, color=color[s])
      ax_size.annotate(s, (params, value), textcoords='offset points',
                       xytext=(5, 5))
  ax_loss.set(xlabel='step', ylabel='training loss', yscale='log',
              title='training loss')
  ax_held.set(xlabel='step', ylabel=f'held-out {label}',
              title=f'held-out {label}')
  ax_size.set(xlabel='parameters', ylabel=f'held-out {label}', xscale='log',
              title=f'{label} vs size')
  for ax in (ax_loss, ax_held):
    if ax.lines:
      ax.legend()
  for ax in (ax_held, ax_size):
    ax.grid(alpha=0.3)
  ax_size.margins(x=0.25, y=0.15)  # Room for the labels.
  fig.tight_layout()
  return fig


def plot(workdir: str, pipeline, summary: dict) -> str:
  """Writes the `figure` of every stage of `pipeline` (a pipeline config),
  each read from its own directory (`kd.config.stage_dirs`: WORKDIR/stage,
  or where `stage_dirs` keeps it, such as a shared teacher), to
  `workdir/plot.png`."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  dirs = kd_config.stage_dirs(pipeline, workdir)
  fig = figure({n: dirs[n] for n in pipeline.stage_order}, summary)
  path = os.path.join(workdir, 'plot.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
