"""Markdown edge table from export sidecars (`*.tflite.json`).

  python -m kd.export.table RUN_DIR_OR_SIDECAR [...]
"""
import glob
import json
import os
import sys


def rows(paths: list[str]) -> list[dict]:
  found = []
  for p in paths:
    found += (sorted(glob.glob(os.path.join(p, '**', '*.tflite.json'),
                               recursive=True)) if os.path.isdir(p) else [p])
  out = []
  for path in found:
    with open(path) as f:
      side = json.load(f)
    run = os.path.dirname(os.path.abspath(path))
    with open(os.path.join(run, 'config.json')) as f:
      config = json.load(f)
    qat = config['distill'].get('quantization_aware', False)
    out.append({'model': config['model']['name'],
                'dataset': config['data']['name'], **side,
                'quantize': ('float32' if side['quantize'] == 'none' else
                             side['quantize']) + (' (QAT)' if qat else '')})
  return out


def markdown(rows_: list[dict]) -> str:
  lines = ['| model | data | format | size (bytes) | TFLite accuracy | JAX '
           'accuracy | max logit diff | LiteRT b=1 (ms) | JAX b=1 (ms) |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows_:
    lat = r.get('latency_ms', {})
    fmt = lambda v, p: '-' if v is None else p.format(v)
    lines.append(
        f'| {r["model"]} | {r["dataset"]} | {r["quantize"]} | {r["bytes"]:,} '
        f'| {100 * r["tflite_accuracy"]:.2f}% | {100 * r["jax_accuracy"]:.2f}% '
        f'| {r["max_abs_diff_vs_jax"]:.2g} '
        f'| {fmt(lat.get("tflite_batch1"), "{:.3f}")} '
        f'| {fmt(lat.get("jax_batch1"), "{:.3f}")} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown(rows(sys.argv[1:])))
