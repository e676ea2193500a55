"""kd run -> Hugging Face folder (`python -m kd.export --format=hf`): the
tokenizer files against kd's tokenizers; the folder against transformers'
names and shapes (tests/fixtures/hf/names) and against what transformers
computes on a committed export (tests/fixtures/hf/exported); the round trip
through `kd.convert --from=hf`; the refusals."""
import importlib.util
import json
import os

import jax
import numpy as np
import pytest
import tokenizers as tk
from absl import app
from absl import flags
from absl.testing import flagsaver
from safetensors.numpy import load_file

from kd import config as kd_config
from kd import runs
from kd.convert import __main__ as convert_cli
from kd.convert import hf as hf_convert
from kd.data import text
from kd.export import __main__ as export_cli
from kd.export import hf
from kd.export import lm
from tests.lm_run_fixture import write_lm_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
_spec = importlib.util.spec_from_file_location(
    'make_exported', os.path.join(FIXTURES, 'exported', 'make.py'))
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
ARCHITECTURES = {'llama': 'LlamaForCausalLM', 'gpt2': 'GPT2LMHeadModel'}

TEXTS = ['def main():\n\treturn 0\n', 'héllo wörld, 日本語 🙂 \x00\x7f',
         '  leading and trailing  ', '', 'ÿ\u0100\u07ff\u0800\uffff\U0010ffff']


def test_the_byte_tokenizer_encodes_and_decodes_as_kds():
  fast, kd = hf.byte_tokenizer(), text.ByteTokenizer()
  assert [fast.token_to_id(s) for s in ('<pad>', '<bos>', '<eos>')] == [
      kd.pad_id, kd.bos_id, kd.eos_id]
  assert fast.get_vocab_size() == kd.vocab_size
  for t, want in zip(TEXTS, kd.encode(TEXTS)):
    assert fast.encode(t, add_special_tokens=False).ids == list(want)
    assert fast.encode(t).ids == [kd.bos_id, *want]
    assert fast.decode(fast.encode(t).ids) == t
  # Any ids, invalid UTF-8 and specials included, decode as kd's do.
  rng = np.random.default_rng(0)
  for n in (1, 3, 20, 200):
    ids = rng.integers(0, kd.vocab_size, n).tolist()
    assert fast.decode(ids) == kd.decode(ids)
  assert fast.decode(list(range(256))) == kd.decode(list(range(256)))


def test_every_byte_is_spelt_as_tokenizers_byte_level_alphabet():
  vocab = hf.byte_tokenizer().get_vocab(with_added_tokens=False)
  assert sorted(vocab) == sorted(tk.pre_tokenizers.ByteLevel.alphabet())
  assert sorted(vocab.values()) == list(range(256))


def test_a_bpe_runs_tokenizer_file_is_kds_with_a_bos(tmp_path):
  workdir = tmp_path / 'bpe'
  workdir.mkdir()
  kd = text.BPETokenizer.train(TEXTS * 20, 300)
  kd.save(str(workdir / 'tokenizer.json'))
  files = hf.tokenizer_files('bpe', str(workdir), kd, 32)
  fast = tk.Tokenizer.from_str(files['tokenizer.json'])
  for t, want in zip(TEXTS, kd.encode(TEXTS)):
    assert fast.encode(t).ids == [kd.bos_id, *want]
    assert fast.decode(fast.encode(t).ids) == kd.decode(want) == t
  config = json.loads(files['tokenizer_config.json'])
  assert config == {'tokenizer_class': 'PreTrainedTokenizerFast',
                    'pad_token': '<pad>', 'bos_token': '<bos>',
                    'eos_token': '<eos>', 'model_max_length': 32,
                    'clean_up_tokenization_spaces': False}
  assert hf.generation_config(kd) == {'bos_token_id': 1, 'eos_token_id': 2,
                                      'pad_token_id': 0}


def test_an_out_dir_holding_anything_is_refused(tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  with pytest.raises(hf.Refused, match='exists and is not empty; remove it'):
    hf.write_folder(str(out), {'config.json': '{}'}, {})
  assert os.listdir(out) == ['keep.txt']
  (out / 'keep.txt').unlink()
  hf.write_folder(str(out), {'config.json': '{}'},
                  {'w': np.ones((2, 3), np.float32)})
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
  assert sorted(os.listdir(tmp_path)) == ['out']  # No temporary folder left.


def export(workdir, out, *more):
  """`python -m kd.export --workdir=... --format=hf --out=...`: None, or
  the one-line refusal it exits with."""
  with flagsaver.flagsaver():
    flags.FLAGS(['kd.export', f'--workdir={workdir}', '--format=hf',
                 f'--out={out}', *more])
    try:
      export_cli.cli_main([])
    except SystemExit as e:
      return str(e.code)
  return None


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """{name: (run directory, exported folder)} for the runs of
  tests/fixtures/hf/exported/runs.json, exported by the command line."""
  out = {}
  for name in make.RUNS:
    tmp = tmp_path_factory.mktemp(name)
    workdir = make.write_run(str(tmp / 'run'), name)
    assert export(workdir, str(tmp / 'hf')) is None
    out[name] = workdir, str(tmp / 'hf')
  return out


@pytest.mark.parametrize('name', list(make.RUNS))
def test_the_folder_is_what_save_pretrained_writes(exported, name):
  _, folder = exported[name]
  assert sorted(os.listdir(folder)) == [
      'config.json', 'generation_config.json', 'model.safetensors',
      'tokenizer.json', 'tokenizer_config.json']
  with open(os.path.join(folder, 'config.json')) as f:
    config = json.load(f)
  assert (config['model_type'], config['architectures']) == (
      name, [ARCHITECTURES[name]])
  assert (config['bos_token_id'], config['eos_token_id'],
          config['pad_token_id'], config['vocab_size']) == (257, 258, 256, 259)
  with open(os.path.join(folder, 'generation_config.json')) as f:
    assert json.load(f) == {'bos_token_id': 257, 'eos_token_id': 258,
                            'pad_token_id': 256}


@pytest.mark.parametrize('name', list(make.RUNS))
def test_the_committed_export_is_what_the_exporter_writes(exported, name):
  """So that transformers' figures on it (next test) are the exporter's."""
  _, folder = exported[name]
  committed = os.path.join(FIXTURES, 'exported', name)
  for file in sorted(os.listdir(committed)):
    if not file.endswith('.json'):
      continue
    with open(os.path.join(folder, file)) as a, open(
        os.path.join(committed, file)) as b:
      assert json.load(a) == json.load(b), file
  got, want = (load_file(os.path.join(d, 'model.safetensors'))
               for d in (folder, committed))
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6, err_msg=k)


@pytest.mark.parametrize('name', list(make.RUNS))
def test_transformers_computes_kds_logits_and_token_ids(exported, name):
  workdir, _ = exported[name]
  _, model, variables, _ = runs.load_run(workdir)
  with np.load(os.path.join(FIXTURES, 'exported', name, 'logits.npz')) as f:
    tokens, want = f['tokens'], f['logits']
  tok = text.ByteTokenizer()  # transformers' tokenizer gave kd's ids:
  assert tokens.tolist() == [[tok.bos_id, *ids][:make.T]
                             for ids in tok.encode(make.TEXTS)]
  got = np.asarray(jax.jit(model.apply)(variables, tokens)[0])
  scale = max(1.0, float(np.abs(want).max()))
  assert np.abs(got - want).max() <= 1e-4 * scale


def test_transformers_generates_kds_greedy_tokens(exported):
  """llama's, with the folder's generation_config (gpt2's logits.npz holds
  its greedy tokens as well; one family is enough for generation_config)."""
  name = 'llama'
  run = lm.load_run(exported[name][0])
  with np.load(os.path.join(FIXTURES, 'exported', name, 'logits.npz')) as f:
    tokens, generated = f['tokens'], f['generated']
  tok = run.tokenizer
  greedy = lm.jax_generate(run.model, run.variables, list(tokens), make.NEW,
                           pad_id=tok.pad_id, eos_id=tok.eos_id)
  for kd_ids, hf_ids in zip(greedy, generated.tolist()):
    # transformers pads after eos, kd stops at it.
    assert kd_ids == hf_ids[:len(kd_ids)] and len(kd_ids) == (
        hf_ids.index(tok.eos_id) + 1 if tok.eos_id in hf_ids else make.NEW)


@pytest.mark.parametrize('name', list(make.RUNS))
def test_export_then_import_gives_the_same_model(exported, tmp_path, name):
  workdir, folder = exported[name]
  back = str(tmp_path / 'back')
  assert convert_cli.main(['--from=hf', folder, f'--out={back}']) == 0
  config, model, variables, _ = runs.load_run(workdir)
  config2, model2, variables2, _ = runs.load_run(back)
  assert jax.tree.structure(variables2) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(variables2)):
    np.testing.assert_array_equal(a, b)
  tokens = np.array([[257, *b'def main():']], np.int32)
  np.testing.assert_array_equal(model2.apply(variables2, tokens)[0],
                                model.apply(variables, tokens)[0])
  # And out again: the same folder, the tokenizer files as they came in.
  again = str(tmp_path / 'again')
  assert export(back, again) is None
  for file in sorted(os.listdir(folder)):
    with open(os.path.join(folder, file), 'rb') as a, open(
        os.path.join(again, file), 'rb') as b:
      assert a.read() == b.read(), file


@pytest.mark.parametrize('family', ['gpt2', 'llama', 'llama_tied'])
def test_names_and_shapes_are_transformers_for_that_config(family):
  with open(os.path.join(FIXTURES, 'names', f'{family}.json')) as f:
    fixture = json.load(f)
  name, kwargs, vocab = hf_convert.kd_config(fixture['config'])
  params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                        hf_convert.abstract_params(name, kwargs, vocab))
  got = {k: list(v.shape) for k, v in hf_convert.hf_tensors(
      name, kwargs, params)}
  assert got == fixture['tensors']
  config = hf_convert.to_hf_config(name, kwargs, vocab)
  assert (config['model_type'], config['architectures']) == (
      fixture['config']['model_type'], fixture['config']['architectures'])


def _config_only_run(workdir, kwargs) -> str:
  """A finished byte-level LM run with no checkpoint: a refusal must come
  before any weight is read."""
  c = kd_config.run_config()
  c.model.update(name='transformer_lm', kwargs=kwargs)
  c.data.update(name='kd_pystdlib/tiny', seq_len=16, tokenizer='byte')
  c.steps = 1
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(c.to_dict(), f)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'steps': 1}, f)
  return workdir


SMALL = {'d_model': 16, 'num_layers': 1, 'num_heads': 2, 'max_len': 16}


@pytest.mark.parametrize('options, named', [
    ({'mlp': 'gelu'}, "mlp='gelu'"),  # RMSNorm + RoPE: no HF family.
    ({'norm': 'layer', 'positions': 'learned', 'mlp': 'gelu',
      'num_kv_heads': 1}, 'num_kv_heads=1'),  # GPT-2 has no GQA.
])
def test_an_option_without_hf_counterpart_is_named_and_nothing_written(
    tmp_path, options, named):
  workdir = _config_only_run(str(tmp_path / 'run'), {**SMALL, **options})
  err = export(workdir, str(tmp_path / 'hf'))
  assert err.startswith('kd.export: ') and named in err, err
  assert sorted(os.listdir(tmp_path)) == ['run']
  assert sorted(os.listdir(workdir)) == ['config.json', 'summary.json']


def test_a_non_empty_out_is_refused_by_the_command(exported, tmp_path):
  workdir, _ = exported['llama']
  out = tmp_path / 'hf'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  err = export(workdir, str(out))
  assert err == (f'kd.export: {out} exists and is not empty; remove it or '
                 'choose another --out')
  assert os.listdir(out) == ['notes.txt']


def test_file_format_flags_do_not_apply(exported, tmp_path):
  workdir, _ = exported['llama']
  with pytest.raises(app.UsageError, match='--quantize, --batch do not'):
    export(workdir, str(tmp_path / 'hf'), '--quantize=int8', '--batch=2')
  assert not os.path.exists(tmp_path / 'hf')


def test_an_encoder_run_exports_as_distilbert_and_reads_back(tmp_path):
  """The command on a transformer_encoder run (transformers' figures on
  exported encoders: tests/fixtures/hf/exported_encoder)."""
  sizes = {'d_model': 16, 'num_layers': 1, 'num_heads': 2, 'mlp_hidden': 32,
           'max_len': 16, 'type_vocab_size': 0, 'norm_eps': 1e-12}
  workdir = write_lm_run(str(tmp_path / 'run'), str(tmp_path / 'tfds'),
                         train_steps=0, seq_len=16, sizes=sizes, noise=0.02,
                         model_name='transformer_encoder')
  folder, back = str(tmp_path / 'hf'), str(tmp_path / 'back')
  assert export(workdir, folder) is None
  assert sorted(os.listdir(folder)) == [  # An encoder does not generate.
      'config.json', 'model.safetensors', 'tokenizer.json',
      'tokenizer_config.json']
  with open(os.path.join(folder, 'config.json')) as f:
    config = json.load(f)
  assert (config['model_type'], config['architectures'],
          config['vocab_size']) == ('distilbert', ['DistilBertForMaskedLM'],
                                    259)
  assert convert_cli.main(['--from=hf', folder, f'--out={back}']) == 0
  _, model, variables, _ = runs.load_run(workdir)
  _, model2, variables2, _ = runs.load_run(back)
  assert jax.tree.structure(variables2) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(variables2)):
    np.testing.assert_array_equal(a, b)
  tokens = np.array([[257, *b'def main():']], np.int32)
  np.testing.assert_array_equal(model2.apply(variables2, tokens)[0],
                                model.apply(variables, tokens)[0])


def test_an_unfinished_run_is_refused_before_anything_is_written(tmp_path):
  workdir = _config_only_run(str(tmp_path / 'run'), SMALL)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'steps': 0}, f)  # Config: 1 step.
  err = export(workdir, str(tmp_path / 'hf'))
  assert 'is unfinished' in err and '--allow_unfinished' in err, err
  assert sorted(os.listdir(tmp_path)) == ['run']


def test_a_run_whose_tokenizer_cannot_be_read_is_one_line(tmp_path):
  """As a converted HF folder without tokenizer.json is."""
  workdir = _config_only_run(str(tmp_path / 'run'), SMALL)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  config['data'].update(name='kd_text', tokenizer='hf')
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  err = export(workdir, str(tmp_path / 'hf'))
  assert err.startswith(f'kd.export: {workdir}: ') and 'tokenizer.json' in err
  assert sorted(os.listdir(tmp_path)) == ['run']
