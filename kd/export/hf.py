"""A kd run as a Hugging Face folder: `python -m kd.export --workdir=RUN
--format=hf --out=DIR` writes what `save_pretrained` would,

  config.json             model_type and architectures (`kd.convert.hf.
                          to_hf_config`: llama layout by default, gpt2 where
                          the student's options are GPT-2's, the family whose
                          options it uses), the special ids
  model.safetensors       float32 tensors named as transformers names them
                          (`kd.convert.hf.hf_tensors`, the family's one table)
  tokenizer.json          the run's tokenizer for the `tokenizers` library,
  tokenizer_config.json   its ids equal to kd's, a bos prepended on encode
  generation_config.json  bos, eos and pad ids

so that `transformers.AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` load it, and `python -m kd.convert
--from=hf DIR` reads it back.

kd's byte tokenizer (UTF-8 bytes 0..255, pad 256, bos 257, eos 258) becomes a
byte-level BPE without merges whose vocabulary maps byte b (spelt with
GPT-2's byte alphabet) to id b, plus the three special tokens; a BPE run's
tokenizer.json is kd's own. Either way encoding is `[bos] + kd's ids`
(`add_special_tokens=False`: kd's ids alone) and decoding with
`skip_special_tokens=True` is kd's decode. One difference: transformers reads
the special tokens' spellings (`<eos>`) in text as the special ids, as it
does for every tokenizer; kd's byte tokenizer reads their bytes
(`split_special_tokens=True` does the same in transformers). A run converted
from a Hugging Face folder keeps that folder's tokenizer files. A kd-trained
encoder (data.task 'mlm' or 'classify': distilbert or bert, *ForMaskedLM or,
head='cls', *ForSequenceClassification without the masked-LM head) goes out
with its WordPiece tokenizer.json given BERT's [CLS] $A [SEP] post-processor
and a tokenizer_config.json naming its five special tokens
(`wordpiece_files`), config.json its pad_token_id and, from
data.class_names, its id2label.

A student option with no counterpart in the family is refused by
`to_hf_config` before any weight is read; the folder is written beside DIR
and renamed into place, so a refusal or a failure leaves nothing, and an
existing DIR that is not empty is refused.
"""
import json
import os
import shutil
import tempfile

import numpy as np

SPECIALS = ('<pad>', '<bos>', '<eos>')  # kd's BPE spelling (text.BPETokenizer).
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json')


class Refused(ValueError):
  """An export the command refuses before writing anything, in one line."""


def byte_tokenizer():
  """kd's `ByteTokenizer` as a `tokenizers.Tokenizer`: id b for byte b,
  `<pad>` 256, `<bos>` 257, `<eos>` 258, and a bos prepended on encode."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  from kd.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  vocab = {c: b for b, c in hf_tokenizer.bytes_to_unicode().items()}
  tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                  use_regex=False)
  tok.decoder = tk.decoders.ByteLevel()
  tok.add_special_tokens([tk.AddedToken(s, special=True, normalized=False)
                          for s in SPECIALS])
  return _with_bos(tok)


def _with_bos(tok):
  """`tok` prepending its bos on encode, as kd prompts a model."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  bos = SPECIALS[1]
  tok.post_processor = tk.processors.TemplateProcessing(
      single=f'{bos} $A', pair=f'{bos} $A {bos} $B',
      special_tokens=[(bos, tok.token_to_id(bos))])
  return tok


def _special_ids(tok) -> dict:
  return {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id,
          'pad_token_id': tok.pad_id}


def tokenizer_files(kind: str, workdir: str, tok,
                    max_len: int) -> dict[str, str]:
  """tokenizer.json and tokenizer_config.json (text) of a run whose
  tokenizer is `kind`: 'byte' and 'bpe' made here, 'hf' (a converted run,
  or one reading its tokenizer) the files it keeps from the HF folder, as
  they were, generation_config.json included."""
  own = [os.path.join(workdir, n) for n in TOKENIZER_FILES]
  if kind not in ('byte', 'bpe'):
    return _kept(workdir, (*TOKENIZER_FILES, 'special_tokens_map.json',
                           'generation_config.json'))
  if kind == 'byte':
    fast = byte_tokenizer()
  else:
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    fast = _with_bos(tk.Tokenizer.from_file(own[0]))
  names = [fast.id_to_token(i) for i in (tok.pad_id, tok.bos_id, tok.eos_id)]
  if names != list(SPECIALS):
    raise ValueError(f'{workdir}: the tokenizer spells pad, bos, eos as '
                     f'{names}, kd as {list(SPECIALS)}')
  config = {'tokenizer_class': 'PreTrainedTokenizerFast',
            'pad_token': SPECIALS[0], 'bos_token': SPECIALS[1],
            'eos_token': SPECIALS[2], 'model_max_length': max_len,
            'clean_up_tokenization_spaces': False}
  return {'tokenizer.json': fast.to_str(pretty=True),
          'tokenizer_config.json': json.dumps(config, indent=2)}


def wordpiece(workdir: str):
  """A kd encoder run's WordPiece tokenizer (RUN_DIR/tokenizer.json)."""
  from kd.data import mlm  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, 'tokenizer.json')
  if not os.path.isfile(path):
    raise Refused(f'{path} not found: an encoder goes out with the '
                  'WordPiece tokenizer it was trained with; copy that '
                  'tokenizer.json into the run directory')
  try:
    return mlm.WordPieceTokenizer.load(path)
  except ValueError as e:
    raise Refused(str(e)) from None


def wordpiece_files(workdir: str, tok, max_len: int) -> dict[str, str]:
  """tokenizer.json (the run's WordPiece, with BERT's post-processor: a text
  encodes as [CLS] ids [SEP], a pair [CLS] a [SEP] b [SEP]) and
  tokenizer_config.json naming its special tokens."""
  import tokenizers as tk  # pylint: disable=import-outside-toplevel
  fast = tk.Tokenizer.from_file(os.path.join(workdir, 'tokenizer.json'))
  names = {r: fast.id_to_token(getattr(tok, f'{r}_id'))
           for r in ('pad', 'unk', 'cls', 'sep', 'mask')}
  cls, sep = names['cls'], names['sep']
  fast.post_processor = tk.processors.TemplateProcessing(
      single=f'{cls} $A {sep}', pair=f'{cls} $A {sep} $B:1 {sep}:1',
      special_tokens=[(cls, tok.cls_id), (sep, tok.sep_id)])
  config = {'tokenizer_class': 'PreTrainedTokenizerFast',
            **{f'{r}_token': n for r, n in names.items()},
            'model_max_length': max_len,
            'clean_up_tokenization_spaces': False}
  return {'tokenizer.json': fast.to_str(pretty=True),
          'tokenizer_config.json': json.dumps(config, indent=2)}


def generation_config(tok) -> dict:
  """generation_config.json: generation starts after bos and stops at eos."""
  return _special_ids(tok)


def _kept(workdir: str, names) -> dict[str, str]:
  """The files of `names` a converted run kept from its HF folder."""
  out = {}
  for name in names:
    if os.path.isfile(path := os.path.join(workdir, name)):
      with open(path) as f:
        out[name] = f.read()
  return out


def check_out(out: str):
  """Refuses an `out` that is a file or a directory holding anything."""
  if os.path.isdir(out) and os.listdir(out):
    raise Refused(f'{out} exists and is not empty; remove it or choose '
                  'another --out')
  if os.path.exists(out) and not os.path.isdir(out):
    raise Refused(f'{out} is a file; choose a directory --out')


def write_folder(out: str, text: dict[str, str],
                 tensors: dict[str, np.ndarray]):
  """Writes `text` files and model.safetensors into a folder beside `out`,
  renamed to `out` at the end (over an empty directory)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  out = os.path.abspath(out)
  check_out(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
  try:
    for name, content in text.items():
      with open(os.path.join(tmp, name), 'w') as f:
        f.write(content)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(tmp, 'model.safetensors'),
              metadata={'format': 'pt'})  # transformers reads 'pt' files.
    umask = os.umask(0)
    os.umask(umask)  # mkdtemp's 0700 and safetensors' 0600 are not to share.
    os.chmod(tmp, 0o777 & ~umask)
    for name in os.listdir(tmp):
      os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export(workdir: str, out: str) -> dict:
  """Writes the run in `workdir` as a Hugging Face folder `out` (see the
  module doc); returns its config.json."""
  from kd import runs  # pylint: disable=import-outside-toplevel
  from kd.convert import hf  # pylint: disable=import-outside-toplevel
  from kd import data  # pylint: disable=import-outside-toplevel
  from kd.data import text  # pylint: disable=import-outside-toplevel
  check_out(out)
  config = runs.load_config(workdir)
  name, kwargs = config.model.name, config.model.kwargs.to_dict()
  try:
    model, spec = runs.model_of(config, workdir)
  except ValueError as e:  # Its tokenizer cannot be read: the error says why.
    raise Refused(f'{workdir}: {e}') from None
  # A [CLS] classifier's logits classify its labels; its vocabulary is a kwarg.
  vocab = (kwargs['vocab_size'] if kwargs.get('head') == 'cls'
           else spec.num_classes)
  try:  # A config mapping: its errors are options with no counterpart.
    hf_config = hf.to_hf_config(name, kwargs, vocab)
  except ValueError as e:
    raise Refused(f'{workdir}: {e}') from None
  variables = runs.load_run(workdir)[2]
  tensors = dict(hf.hf_tensors(name, kwargs, variables['params']))
  files = {}
  names = config.data.get('class_names')
  if names and 'id2label' in hf_config:
    hf_config['id2label'] = {str(i): n for i, n in enumerate(names)}
    hf_config['label2id'] = {n: i for i, n in enumerate(names)}
  kept = os.path.join(workdir, hf.SPECIAL_TOKENS)
  if data.encoder_task(config) and not os.path.isfile(kept):
    # A kd-trained encoder (masked LM or classifier, its tokenizer trained
    # or a converted BERT's): its WordPiece tokenizer (a converted run keeps
    # its folder's files, below).
    tok = wordpiece(workdir)
    files = wordpiece_files(workdir, tok, model.max_len)
    hf_config['pad_token_id'] = tok.pad_id
  elif text.is_text(config.data.name):
    # A converted encoder's tokenizer goes out as it came in, unread: kd's
    # text pipeline cannot read BERT's WordPiece (no eos, bytes not kept).
    tok = (None if name == 'transformer_encoder' and os.path.isfile(kept)
           else text.run_tokenizer(config, workdir))
    files = tokenizer_files(config.data.tokenizer, workdir, tok,
                            model.max_len)
    ids = _special_ids(tok) if tok else {}
    if os.path.isfile(kept):
      # A converted run: its folder's ids (where kd reads eos for a missing
      # pad or bos, the folder's config keeps null).
      ids = runs.read_json(kept, 'convert the HF folder again')
    hf_config.update(ids)
    if name == 'transformer_lm':
      files.setdefault('generation_config.json', json.dumps(
          generation_config(tok), indent=2))
  hf_config.setdefault('dtype', 'float32')  # As save_pretrained records it.
  files['config.json'] = json.dumps(hf_config, indent=2, sort_keys=True)
  write_folder(out, files, tensors)
  return hf_config
