"""Language model -> LiteRT (prefill and decode signatures): parity with JAX,
weight-only quantization, the export and generation command lines."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter

from kd import generate
from kd.export import lm
from tests import run_checks
from tests.lm_run_fixture import write_lm_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P, L = 24, 64  # Prompt length and cache slots of the exported files.


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  workdir = write_lm_run(str(tmp_path_factory.mktemp('lm_run')), data_dir,
                         train_steps=40)
  return lm.load_run(workdir)


@pytest.fixture(scope='module')
def files(run):
  return {q: lm.convert(run.model, run.variables, prompt_len=P, cache_len=L,
                        quantize=q) for q in ('none', 'int8', 'int4')}


@pytest.fixture(scope='module')
def measured(run, files):
  return {q: lm.measure(run, lm.LiteRTLM(blob), prompts=4, new_tokens=16,
                        bpb_rows=4, speed=False)
          for q, blob in files.items() if q != 'int4'}


def test_load_run_restores_the_trained_checkpoint(run):
  assert run.step == 40 and run.model.d_model == 128
  assert run.tokenizer.vocab_size == 259
  assert run.variables['params']['embed']['embedding'].shape == (259, 128)
  assert lm.context_len(run) == 64


def test_two_signatures_with_the_cache_as_inputs_and_outputs(run, files):
  m = lm.LiteRTLM(files['none'])
  assert m.signatures() == {
      'prefill': {'inputs': ['tokens'],
                  'outputs': ['k_cache', 'logits', 'v_cache']},
      'decode': {'inputs': ['k_cache', 'pos', 'token', 'v_cache'],
                 'outputs': ['k_cache', 'logits', 'v_cache']}}
  assert (m.prompt_len, m.cache_len) == (P, L)
  logits, (k, v) = m.prefill(np.zeros(P, np.int32))
  assert logits.shape == (P, 259)
  assert k.shape == v.shape == (2, 1, L, 4, 32)
  ops = m.op_names()
  assert 'DYNAMIC_UPDATE_SLICE' in ops and 'FULLY_CONNECTED' in ops
  assert not [op for op in ops if op.startswith('Flex') or op == 'CUSTOM']
  # Tensor names are stripped (tflite.without_tensor_names); signatures
  # keep theirs, as checked above.
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  for blob in files.values():
    tensors = Interpreter(model_content=blob).get_tensor_details()
    assert len(tensors) > 100 and not any(t['name'] for t in tensors)


def test_float32_greedy_generation_equals_jax_token_for_token(measured):
  parity = measured['none']['parity']
  assert parity['prompt_lengths'] == [12, 16, 20, 24]
  assert parity['greedy_sequences_equal'] == 4
  assert parity['greedy_tokens_equal'] == 4 * 16


def test_float32_bits_per_byte_equal_jax(measured):
  bpb = measured['none']['bits_per_byte']
  # Trained: well below uniform over 259 tokens (8.02 bits per byte).
  assert bpb['jax_float32'] < 6.5
  assert bpb['litert'] == pytest.approx(bpb['jax_float32'], abs=1e-4)


def test_int8_weights_file_is_small_and_keeps_bits_per_byte(files, measured):
  assert len(files['int8']) <= 0.35 * len(files['none'])
  bpb = measured['int8']['bits_per_byte']
  assert abs(bpb['litert'] - bpb['jax_float32']) < 0.05
  # Quantized, so not bit-equal to float.
  assert bpb['litert'] != measured['none']['bits_per_byte']['litert']


def test_weight_only_files_dequantize_to_float_kernels(files):
  # Weight-only: int8/int4 weights feed DEQUANTIZE, and no hybrid kernel
  # quantizes activations, unlike the converter's dynamic-range recipe.
  for q in ('int8', 'int4'):
    assert 'DEQUANTIZE' in lm.LiteRTLM(files[q]).op_names()
  assert len(files['int4']) < 0.8 * len(files['int8'])
  tokens = np.arange(P, dtype=np.int32) % 256
  ref = lm.LiteRTLM(files['none']).prefill(tokens)[0]
  err = {q: np.abs(lm.LiteRTLM(files[q]).prefill(tokens)[0] - ref).max()
         for q in ('int8', 'int4')}
  assert 0 < err['int8'] < err['int4'] < 1.0


def test_decode_continues_a_prefill_as_one_longer_prefill(run, files):
  m = lm.LiteRTLM(files['none'])
  tokens = np.arange(P, dtype=np.int32) % 256
  full, _ = m.prefill(tokens)
  n = 10  # Prefill n tokens (padding after them), decode the rest.
  logits, cache = m.prefill(np.where(np.arange(P) < n, tokens, 7))
  for pos in range(n, P):
    logits, cache = m.decode(int(tokens[pos]), pos, cache)
    np.testing.assert_allclose(logits, full[pos], atol=1e-4)


def test_too_long_prompts_are_errors_naming_both_lengths(files):
  m = lm.LiteRTLM(files['none'])
  with pytest.raises(ValueError, match=r'prompt of 25 tokens.* 1 to 24'):
    m.generate(list(range(25)), 4)
  with pytest.raises(ValueError, match=r'prompt length 20 \+ max_new_tokens '
                     r'50 exceeds the exported cache length 64'):
    m.generate(list(range(20)), 50)


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  """`python -m kd.export` of the run (in this process): the file's path."""
  from kd.export import __main__ as export_cli  # pylint: disable=import-outside-toplevel
  out = str(tmp_path_factory.mktemp('export') / 'lm.tflite')
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', f'--workdir={run.workdir}', f'--out={out}',
                 '--quantize=dynamic', f'--prompt_len={P}',
                 '--parity_prompts=2', '--parity_tokens=8', '--bpb_rows=3'])
    export_cli.main([])
  return out


def app_scores(model_path: str, data_dir: str) -> tuple[float, float]:
  """What an app does with an exported language model: it reads only the
  sidecar and the raw text as tfds stores it (no kd code: json, numpy,
  tfds and the LiteRT interpreter) and returns (bits per byte, next-token
  accuracy) on the sidecar's held-out rows; `data_dir`: the TFDS folder."""
  with open(model_path + '.json') as f:
    side = json.load(f)
  held, ids = side['heldout'], side['input']['special_ids']
  assert side['input']['tokenizer'] == 'byte'  # Token ids = UTF-8 bytes.
  b = tfds.builder_from_directory(os.path.join(data_dir, held['tfds_name']))
  stream = []
  for e in tfds.as_numpy(b.as_dataset(split=held['split'])):
    stream += [ids['bos'], *e[held['feature']], ids['eos']]
  t = held['row_tokens']
  rows = -(-(len(stream) - 1) // t)
  stream = np.array(stream + [ids['pad']] * (rows * t + 1 - len(stream)))
  prefill = Interpreter(model_path=model_path).get_signature_runner(
      'prefill')
  nll, nbytes, right, targets = 0., 0, 0, 0
  for r in held['rows']:
    row = stream[r * t:(r + 1) * t + 1]
    logits = prefill(tokens=row[None, :-1].astype(np.int32))['logits'][0]
    logits, target = logits.astype(np.float64), row[1:]
    mask = (target != ids['pad']) & (target != ids['bos'])
    top = logits.max(-1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(-1))
    nll += float(np.sum(mask * (lse - logits[np.arange(t), target])))
    nbytes += int(np.sum(mask & (target < 256)))
    right += int(np.sum(mask & (logits.argmax(-1) == target)))
    targets += int(mask.sum())
  return nll / np.log(2) / nbytes, right / targets


def test_an_app_reading_only_the_sidecar_gets_the_reported_scores(run,
                                                                 exported):
  side = json.load(open(exported + '.json'))
  assert side['input']['special_ids'] == {'pad': 256, 'bos': 257, 'eos': 258}
  assert side['input']['attention_mask'] is None
  assert (side['input']['context_len'], side['input']['prompt_len']) == (L, P)
  assert side['input']['formula'].startswith('tokens = [257] + the UTF-8')
  assert len(side['heldout']['rows']) == 3
  bpb, accuracy = app_scores(exported, run.config.data.data_dir)
  assert bpb == pytest.approx(side['bits_per_byte']['litert'], rel=1e-12)
  assert accuracy == side['next_token_accuracy']['litert']
  assert 0.1 < accuracy < 0.9 and bpb < 6.5  # Trained, not trivial.


def test_export_cli_dispatches_to_the_lm_exporter(run, exported):
  out = exported
  side = json.load(open(out + '.json'))
  assert side['bytes'] == os.path.getsize(out)
  assert side['size_vs_float32'] == side['bytes'] / side['float32_bytes']
  assert (side['prompt_len'], side['cache_len'], side['vocab_size']) == (
      P, L, 259)
  assert side['tokenizer']['kind'] == 'byte'
  assert side['tokenizer']['eos_id'] == 258
  assert side['signatures']['decode']['inputs']['k_cache'][0] == [
      2, 1, L, 4, 32]
  assert side['checkpoint_step'] == 40
  assert 'DYNAMIC_UPDATE_SLICE' in side['builtin_ops']
  assert side['tokens_per_s']['litert'] > 0 and side['tokens_per_s']['jax'] > 0


def test_generate_cli_prints_the_same_greedy_text_in_both_modes(run, files,
                                                                 tmp_path):
  path = str(tmp_path / 'lm.tflite')
  with open(path, 'wb') as f:
    f.write(files['none'])
  with open(path + '.json', 'w') as f:
    json.dump({'tokenizer': {'kind': 'byte'}}, f)
  want = generate.complete('def f(', workdir=run.workdir, max_new_tokens=20)
  assert want.startswith('def f(') and len(want) > len('def f(')
  out = subprocess.run(
      [sys.executable, '-m', 'kd.generate', f'--tflite={path}',
       '--prompt=def f(', '--max_new_tokens=20'], cwd=ROOT, check=True,
      capture_output=True, text=True, timeout=300).stdout
  assert out[:-1] == want  # print() adds one newline.
  with pytest.raises(ValueError, match=r'prompt length 61 \+ max_new_tokens '
                     r'20 = 81 exceeds the model context max_len=64'):
    generate.complete('x' * 60, workdir=run.workdir, max_new_tokens=20)


def test_sampling_through_litert_draws_as_jax_does(run, files):
  prompt = [257, *b'import ']
  got = lm.LiteRTLM(files['none']).generate(prompt, 12, temperature=1.0,
                                            top_k=20, seed=3)
  (want,) = lm.jax_generate(run.model, run.variables, [prompt], 12,
                            pad_id=256, temperature=1.0, top_k=20, seed=3)
  assert got == want


def test_a_bpe_run_exports_its_tokenizer_beside_the_file(run, tmp_path):
  workdir = write_lm_run(str(tmp_path / 'bpe_run'),
                         run.config.data.data_dir, train_steps=0,
                         seq_len=32,
                         tokenizer='bpe', vocab_size=300,
                         sizes={'d_model': 32, 'num_layers': 1,
                                'num_heads': 2, 'max_len': 32})
  bpe = lm.load_run(workdir)
  assert bpe.tokenizer.vocab_size == 300
  out = str(tmp_path / 'export' / 'bpe.tflite')
  side = lm.export(bpe, out, prompts=0)
  assert side['tokenizer'] == {
      'kind': 'bpe', 'vocab_size': 300, 'pad_id': 0, 'bos_id': 1,
      'eos_id': 2, 'prompt': 'bos_id, then the encoded text',
      'file': 'bpe.tflite.tokenizer.json'}
  tok = lm.sidecar_tokenizer(out)
  ids = tok.encode(['def main():'])[0]
  assert tok.decode(ids) == 'def main():'
  assert list(ids) == list(bpe.tokenizer.encode(['def main():'])[0])
  assert (side['prompt_len'], side['cache_len']) == (16, 32)
  want = generate.complete('def', workdir=workdir, max_new_tokens=8)
  assert generate.complete('def', tflite=out, max_new_tokens=8) == want


def test_generate_on_a_pipeline_top_folder_names_its_stages(tmp_path):
  top = tmp_path / 'lm_distill'
  proc = run_checks.pipeline_top_folder_refusal(
      top, 'teacher', 'student', command=['kd.generate', '--prompt=def'])
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert proc.stderr.splitlines()[-1] == (
      f"{top} is a pipeline's top folder, not one run; its "
      f'stages: teacher ({top}/teacher), student ({top}/student). Pass one '
      f"stage's directory, e.g. --workdir={top}/student (the last stage)")
