"""python -m kd.convert --from=hf: every HF family converts with logits
parity against transformers (tests/fixtures/hf, made outside kd), --describe
counts equal transformers' counts, the tables invert exactly, and each
refusal names its cause and writes nothing."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tokenizers
from safetensors.numpy import save_file

from kd import runs
from kd.data import hf_tokenizer
from kd.convert import __main__ as cli
from kd.convert import hf
from tests import hf_checks

HF = hf_checks.HF
DECODERS = ('gpt2', 'llama', 'llama_tied', 'mistral', 'qwen2', 'qwen3',
            'gemma2', 'llama_sharded', 'llama_bf16')



def _logits(run_dir, tokens):
  _, model, variables, step = runs.load_run(str(run_dir))
  assert step == 0
  return np.asarray(jax.jit(lambda v, t: model.apply(v, t, train=False)[0])(
      variables, tokens)), variables


@pytest.mark.parametrize('family', DECODERS)
def test_logits_equal_transformers(family, tmp_path, capsys):
  src = os.path.join(HF, family)
  code, out, err = hf_checks.convert(capsys, src, tmp_path / 'run')
  assert code == 0, err
  assert 'wrote' in out
  ref = np.load(os.path.join(src, 'logits.npz'))
  logits, _ = _logits(tmp_path / 'run', ref['tokens'])
  hf_checks.assert_parity(logits, ref['logits'], family,
                          hf.hf_config(src)['model_type'])
  summary = json.load(open(tmp_path / 'run' / 'summary.json'))
  assert summary['converted'] and summary['source'] == 'hf'
  assert summary['source_files']['config.json'] == hf.common.sha256(
      os.path.join(src, 'config.json'))
  copied = [n for n in hf.TOKENIZER_FILES if os.path.exists(
      os.path.join(src, n))]
  for name in copied:
    assert open(tmp_path / 'run' / name, 'rb').read() == open(
        os.path.join(src, name), 'rb').read()
  config = json.load(open(tmp_path / 'run' / 'config.json'))
  assert config['data']['tokenizer'] == 'hf'
  assert config['data']['vocab_size'] == ref['logits'].shape[-1]
  specials = json.load(open(tmp_path / 'run' / hf.SPECIAL_TOKENS))
  hf_config = json.load(open(os.path.join(src, 'config.json')))
  assert specials['eos_token_id'] == hf_config['eos_token_id']


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_half_precision_storage(dtype, tmp_path, capsys):
  """--dtype=bfloat16 / float16 stores such weights: the logits move by
  their rounding only."""
  src = os.path.join(HF, 'llama')
  code, _, err = hf_checks.convert(capsys, src, tmp_path / 'run', f'--dtype={dtype}')
  assert code == 0, err
  ref = np.load(os.path.join(src, 'logits.npz'))
  logits, variables = _logits(tmp_path / 'run', ref['tokens'])
  dtypes = {x.dtype for x in jax.tree.leaves(variables)}
  assert dtypes == {np.dtype(hf.DTYPES[dtype])}
  err = np.abs(logits - ref['logits']).max()
  assert 1e-5 < err < 0.05 * np.abs(ref['logits']).max()


def test_the_run_tokenizes_with_ids_only_config_json_had(tmp_path, capsys):
  """A folder whose special ids are in config.json alone: the run keeps
  them (special_tokens.json), so data.tokenizer='hf' reads its eos."""
  src = _folder(tmp_path, 'gpt2', config={'eos_token_id': 3,
                                          'bos_token_id': 4})
  os.remove(src / 'tokenizer_config.json')
  os.remove(src / 'generation_config.json')
  assert hf_checks.convert(capsys, src, tmp_path / 'run')[0] == 0
  path = str(tmp_path / 'run' / 'tokenizer.json')
  ids = hf_tokenizer.special_ids(tokenizers.Tokenizer.from_file(path),
                                 str(tmp_path / 'run'), path)
  assert ids == (4, 3, 3)  # bos, eos, pad (none: eos).


def test_hub_names_old_buffers_and_float16(tmp_path, capsys):
  """The Hub's gpt2 file: names without `transformer.`, the causal-mask
  buffers `h.N.attn.bias` (dropped); weights stored as float16 load."""
  src = tmp_path / 'gpt2'
  shutil.copytree(os.path.join(HF, 'gpt2'), src)
  w = hf.Weights(str(src))
  tensors = {n.removeprefix('transformer.'): w.read(n).astype(np.float16)
             for n in w.entries}
  tensors.update({f'h.{i}.attn.bias': np.ones((1, 1, 64, 64), bool)
                  for i in range(2)})
  save_file(tensors, str(src / 'model.safetensors'))
  code, _, err = hf_checks.convert(capsys, src, tmp_path / 'run')
  assert code == 0, err
  ref = np.load(os.path.join(HF, 'gpt2', 'logits.npz'))
  logits, _ = _logits(tmp_path / 'run', ref['tokens'])
  err = np.abs(logits - ref['logits']).max()
  assert 1e-5 < err < 0.02 * np.abs(ref['logits']).max()  # fp16 rounding.


def test_describe_a_student_spec(capsys):
  student = dict(d_model=32, num_layers=1, num_heads=2)
  assert cli.main(['--from=hf', '--describe', os.path.join(HF, 'llama'),
                   f'--student_params={json.dumps(student)}']) == 0
  out = capsys.readouterr().out
  n = hf.parameter_count('transformer_lm', student, 128)
  assert n == 128 * 32 + 32 + 2 * 32 + 4 * 32 * 32 + 3 * 32 * 88
  assert f'student: {n:,} parameters' in out
  assert cli.main(['--from=hf', '--describe', os.path.join(HF, 'llama'),
                   '--student_params=lots']) == 1
  assert "--student_params='lots' is not a parameter count" in (
      capsys.readouterr().err)


@pytest.mark.parametrize('family', DECODERS[:-2])
def test_tables_invert(family):
  """Export's tensors (hf_tensors) of the imported params are the HF
  folder's own, and to_hf_config gives back the same kd model."""
  src = os.path.join(HF, family)
  p = hf.plan(src)
  params = hf.read_params(p)
  exported = dict(hf.hf_tensors(p['model'], p['kwargs'], params,
                                model_type=p['config']['model_type']))
  weights = p['weights']
  assert set(exported) == set(weights.entries)
  for name, array in exported.items():
    np.testing.assert_allclose(array, weights.read(name), atol=1e-6, rtol=0)
  cfg = hf.to_hf_config(p['model'], p['kwargs'], p['vocab'],
                        model_type=p['config']['model_type'])
  assert hf.kd_config(cfg) == (p['model'], p['kwargs'], p['vocab'])
  assert cfg['architectures'] == p['config']['architectures']
  # A kd model of these options exports as this family by default.
  assert hf.default_model_type(p['model'], p['kwargs']) == (
      p['config']['model_type'])


def test_export_refuses_an_option_without_hf_equivalent():
  kwargs = dict(d_model=32, num_layers=1, num_heads=2, norm='layer')
  with pytest.raises(hf.UnsupportedError, match=r'positions=.rope.'):
    hf.to_hf_config('transformer_lm', kwargs, 64)  # gpt2 has learned ones.
  kwargs = dict(d_model=32, num_layers=1, num_heads=2, sliding_window=8,
                sliding_layers='even')
  with pytest.raises(hf.UnsupportedError, match='sliding_layers'):
    hf.to_hf_config('transformer_lm', kwargs, 64, model_type='mistral')


COUNTS = json.load(open(os.path.join(HF, 'counts.json')))


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_describe_counts_equal_transformers(name, tmp_path, capsys):
  entry = COUNTS[name]
  os.makedirs(tmp_path / name)
  with open(tmp_path / name / 'config.json', 'w') as f:
    json.dump(entry['config'], f)
  assert cli.main(['--from=hf', '--describe', str(tmp_path / name),
                   '--student_params=30M']) == 0
  out = capsys.readouterr().out
  n = entry['parameters']
  assert f'parameters: {n:,}\n' in out
  assert (f'memory: {hf.format_bytes(4 * n)} at float32, '
          f'{hf.format_bytes(2 * n)} at bfloat16\n') in out
  assert 'student: 30,000,000 parameters' in out
  assert (f'teacher + student weights: {hf.format_bytes(4 * (n + 30e6))} at '
          'float32') in out


# Refusals: each names the problem and leaves no run directory.


def _folder(tmp_path, family='llama', config=None, drop=(), add=None):
  """A copy of fixture `family` with config.json updated by `config` and
  model.safetensors without the tensors `drop` and with `add`."""
  dst = tmp_path / family
  shutil.copytree(os.path.join(HF, family), dst)
  if config is not None:
    cfg = json.load(open(dst / 'config.json'))
    cfg.update(config)
    json.dump(cfg, open(dst / 'config.json', 'w'))
  if drop or add:
    w = hf.Weights(str(dst))
    tensors = {n: w.read(n) for n in w.entries if n not in drop}
    save_file({**tensors, **(add or {})}, str(dst / 'model.safetensors'))
  return dst


def _refused(capsys, tmp_path, src, *patterns):
  code, _, err = hf_checks.convert(capsys, src, tmp_path / 'out')
  assert code == 1
  assert 'error: ' in err
  for pattern in patterns:
    assert pattern in err, err
  assert not os.path.exists(tmp_path / 'out')
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.out')]
  return err


def test_refuses_unknown_model_type(tmp_path, capsys):
  src = _folder(tmp_path, config={'model_type': 'falcon'})
  _refused(capsys, tmp_path, src, "model_type 'falcon'",
           'supported: bert, distilbert, gemma2, gpt2, llama, mistral, qwen2, '
           'qwen3')


def test_refuses_unsupported_options(tmp_path, capsys):
  src = _folder(tmp_path, config={'rope_scaling': {
      'rope_type': 'yarn', 'factor': 4.0,
      'original_max_position_embeddings': 32}})
  _refused(capsys, tmp_path, src, "rope_scaling of type 'yarn'",
           "'llama3'")
  shutil.rmtree(src)
  src = _folder(tmp_path, config={'hidden_act': 'gelu'})
  _refused(capsys, tmp_path, src, "hidden_act='gelu'", "'silu'")
  shutil.rmtree(src)
  src = _folder(tmp_path, config={'architectures': [
      'LlamaForSequenceClassification']})
  _refused(capsys, tmp_path, src, "architectures "
           "['LlamaForSequenceClassification'] are not supported",
           'supported: LlamaForCausalLM (or LlamaModel)')
  shutil.rmtree(src)
  src = _folder(tmp_path, 'qwen2', config={'use_sliding_window': True})
  _refused(capsys, tmp_path, src, 'use_sliding_window=True')
  shutil.rmtree(src)
  src = _folder(tmp_path, 'gemma2', config={'layer_types': [
      'full_attention', 'sliding_attention', 'sliding_attention']})
  _refused(capsys, tmp_path, src, 'sliding attention on these layers',
           'all layers or the even layers')
  shutil.rmtree(src)
  src = _folder(tmp_path, config={'quantization_config': {
      'quant_method': 'gptq', 'bits': 4}})
  _refused(capsys, tmp_path, src, "quant_method='gptq'",
           'quantized checkpoints are not supported')


def test_refuses_missing_extra_and_misshaped_tensors(tmp_path, capsys):
  src = _folder(tmp_path, drop=('model.layers.1.mlp.up_proj.weight',),
                add={'model.layers.0.self_attn.q_proj.bias':
                     np.zeros(48, np.float32)})
  _refused(capsys, tmp_path, src,
           'missing: model.layers.1.mlp.up_proj.weight (64, 48)',
           'unexpected: model.layers.0.self_attn.q_proj.bias (48,)')
  shutil.rmtree(src)
  # Biases the config says the model has are missing from the files.
  src = _folder(tmp_path, config={'attention_bias': True})
  _refused(capsys, tmp_path, src, 'missing: model.layers.0.self_attn.q_proj.bias',
           'missing: model.layers.1.self_attn.o_proj.bias')
  shutil.rmtree(src)
  src = _folder(tmp_path, drop=('model.norm.weight',),
                add={'model.norm.weight': np.ones(48, np.int8)})
  _refused(capsys, tmp_path, src, 'dtype: model.norm.weight is I8; '
           'supported: F32, F16, F64, BF16')
  shutil.rmtree(src)
  src = _folder(tmp_path, config={'intermediate_size': 32})
  _refused(capsys, tmp_path, src, 'shape mismatch: '
           'model.layers.0.mlp.gate_proj.weight is (64, 48), the config asks '
           'for (32, 48)')


def test_refuses_a_tied_head_that_differs(tmp_path, capsys):
  w = hf.Weights(os.path.join(HF, 'llama_tied'))
  head = w.read('model.embed_tokens.weight')
  src = _folder(tmp_path, 'llama_tied', add={'lm_head.weight': head + 1})
  _refused(capsys, tmp_path, src, 'lm_head.weight differs from '
           'model.embed_tokens.weight', 'tie_word_embeddings')
  shutil.rmtree(src)  # The same head, saved anyway, converts.
  src = _folder(tmp_path, 'llama_tied', add={'lm_head.weight': head})
  assert hf_checks.convert(capsys, src, tmp_path / 'out')[0] == 0


def test_refuses_missing_shard_and_damaged_file(tmp_path, capsys):
  src = _folder(tmp_path, 'llama_sharded')
  os.remove(src / 'model-00003-of-00004.safetensors')
  _refused(capsys, tmp_path, src, 'model-00003-of-00004.safetensors',
           'names shard files that are not in')
  src = _folder(tmp_path)
  data = open(src / 'model.safetensors', 'rb').read()
  open(src / 'model.safetensors', 'wb').write(data[:-100])
  _refused(capsys, tmp_path, src, 'model.safetensors is not a valid '
           'safetensors file', 'truncated')
  open(src / 'model.safetensors', 'wb').write(b'\xff' * 64)
  _refused(capsys, tmp_path, src, 'model.safetensors is not a valid '
           'safetensors file')
  os.remove(src / 'model.safetensors')
  _refused(capsys, tmp_path, src, 'has neither model.safetensors nor '
           'model.safetensors.index.json')


def test_refuses_an_unknown_dtype(tmp_path, capsys):
  code, _, err = hf_checks.convert(capsys, os.path.join(HF, 'llama'), tmp_path / 'out',
                          '--dtype=int8')
  assert code == 1 and "--dtype='int8'" in err and 'bfloat16' in err
  assert not os.path.exists(tmp_path / 'out')


def test_refuses_an_existing_out(tmp_path, capsys):
  os.makedirs(tmp_path / 'out')
  code, _, err = hf_checks.convert(capsys, os.path.join(HF, 'llama'), tmp_path / 'out')
  assert code == 1 and 'exists' in err
  assert os.listdir(tmp_path / 'out') == []
