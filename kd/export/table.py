"""Markdown edge table from classifier export sidecars (`*.tflite.json`,
`*.onnx.json`; language-model sidecars are left out).

  python -m kd.export.table RUN_DIR_OR_SIDECAR [...]
"""
import glob
import json
import os
import sys

_FORMATS = {'tflite': 'TFLite', 'onnx': 'ONNX'}


def rows(paths: list[str]) -> list[dict]:
  found = []
  for p in paths:
    found += (sorted(glob.glob(os.path.join(p, '**', '*.tflite.json'),
                               recursive=True) +
                     glob.glob(os.path.join(p, '**', '*.onnx.json'),
                               recursive=True))
              if os.path.isdir(p) else [p])
  out = []
  for path in found:
    with open(path) as f:
      side = json.load(f)
    if side.get('kind') == 'transformer_lm':
      continue
    run = os.path.dirname(os.path.abspath(path))
    with open(os.path.join(run, 'config.json')) as f:
      config = json.load(f)
    qat = config['distill'].get('quantization_aware', False)
    fmt = side.get('format', 'tflite')  # Older sidecars are TFLite's.
    lat = side.get('latency_ms', {})
    out.append({'model': config['model']['name'],
                'dataset': config['data']['name'], **side,
                'format': _FORMATS[fmt],
                'quantize': ('float32' if side['quantize'] == 'none' else
                             side['quantize']) + (' (QAT)' if qat else ''),
                'file_accuracy': side[f'{fmt}_accuracy'],
                'file_batch1_ms': lat.get(f'{fmt}_batch1')})
  return out


def markdown(rows_: list[dict]) -> str:
  lines = ['| model | data | format | quantize | size (bytes) | file accuracy '
           '| JAX accuracy | max logit diff | file b=1 (ms) | JAX b=1 (ms) |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows_:
    fmt = lambda v, p: '-' if v is None else p.format(v)
    lines.append(
        f'| {r["model"]} | {r["dataset"]} | {r["format"]} | {r["quantize"]} '
        f'| {r["bytes"]:,} | {100 * r["file_accuracy"]:.2f}% '
        f'| {100 * r["jax_accuracy"]:.2f}% '
        f'| {r["max_abs_diff_vs_jax"]:.2g} '
        f'| {fmt(r["file_batch1_ms"], "{:.3f}")} '
        f'| {fmt(r.get("latency_ms", {}).get("jax_batch1"), "{:.3f}")} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown(rows(sys.argv[1:])))
