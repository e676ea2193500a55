"""The comparison table printed at the end of a pipeline, and its PNG plot."""
import os

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


def plot(workdir: str, stages: list[str], summary: dict) -> str:
  """Writes `workdir/plot.png`: training loss per stage, accuracy vs params."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
  for s in stages:
    rows = [r for r in read_metrics(os.path.join(workdir, s)) if 'loss' in r]
    if rows:
      ax_loss.plot([r['step'] for r in rows], [r['loss'] for r in rows], label=s)
      if 'ce' in rows[0] and rows[0]['ce'] != rows[0]['loss']:
        ax_loss.plot([r['step'] for r in rows], [r['ce'] for r in rows],
                     '--', label=f'{s} (CE part)')
    params, acc = summary.get(f'{s}/params'), summary.get(f'{s}/test_accuracy')
    if params is not None and acc is not None:
      ax_acc.scatter(params, acc)
      ax_acc.annotate(s, (params, acc), textcoords='offset points',
                      xytext=(5, 5))
  ax_loss.set(xlabel='step', ylabel='training loss', yscale='log',
              title='training curves')
  ax_loss.legend()
  ax_acc.set(xlabel='parameters', ylabel='test accuracy', xscale='log',
             title='test accuracy vs size')
  ax_acc.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, 'plot.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
