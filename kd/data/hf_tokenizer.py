"""A Hugging Face tokenizer (`tokenizer.json`, read by the `tokenizers`
library) in kd's text pipeline: config.data.tokenizer='hf'.

Special ids: `bos_token`, `eos_token`, `pad_token` of tokenizer_config.json
(a string or {"content": ...}), else `bos_token_id`, `eos_token_id`,
`pad_token_id` of generation_config.json, special_tokens.json (a run
converted by kd.convert.hf keeps its HF config.json's ids there) or an HF
config.json beside it. No eos is an error; no bos: eos (GPT-2's
<|endoftext|> separates documents); no pad: eos (masks never read the pad
id: `kd.data.text`).

Bits per byte counts the UTF-8 bytes each token stands for (`token_bytes`):
  byte-level BPE (GPT-2, Llama 3, Qwen): one byte per character of the
    piece (each character spells one byte, GPT-2's bytes_to_unicode);
  SentencePiece style (Llama 2, Mistral, Gemma): the piece with '▁' as a
    space, and a byte-fallback piece <0xNN> as one byte;
  added tokens: their text; special tokens: 0.
A tokenizer that puts a space before every document (SentencePiece's dummy
prefix, ByteLevel's add_prefix_space) spells one byte the text does not
hold: `prefix_bytes` of a document's first token (1 where its piece starts
with that space) are taken off. `check_lossless` verifies all this on a
probe text and refuses a tokenizer that does not keep every byte (bits per
byte would be wrong).
"""
import json
import os
import re

import numpy as np

from kd import files

# The files of an HF tokenizer that a run keeps (never config.json: a run's
# config.json is kd's).
FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
         'generation_config.json')
PROBE = 'Hello  wörld!\n\tx = 1; naïve café 東京 ok'
_BYTE_PIECE = re.compile(r'<0x([0-9A-Fa-f]{2})>')


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's map from each byte to the character that spells it in a
  byte-level vocabulary (printable Latin-1 as itself, the rest from 256 on)."""
  keep = (list(range(ord('!'), ord('~') + 1)) +
          list(range(ord('¡'), ord('¬') + 1)) +
          list(range(ord('®'), ord('ÿ') + 1)))
  out, extra = {}, 0
  for b in range(256):
    if b in keep:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + extra)
      extra += 1
  return out


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def _has_type(node, kind: str) -> bool:
  """Whether a tokenizer.json component (or one nested in a Sequence) is of
  `type` kind."""
  if isinstance(node, dict):
    return node.get('type') == kind or any(_has_type(v, kind)
                                           for v in node.values())
  if isinstance(node, list):
    return any(_has_type(v, kind) for v in node)
  return False


def piece_bytes(piece: str, byte_level: bool) -> bytes:
  """The bytes of text a vocabulary piece stands for."""
  if byte_level and all(c in _UNICODE_TO_BYTE for c in piece):
    return bytes(_UNICODE_TO_BYTE[c] for c in piece)
  m = _BYTE_PIECE.fullmatch(piece)
  if m:
    return bytes([int(m.group(1), 16)])
  return piece.replace('\u2581', ' ').encode('utf-8')


class HFTokenizer:
  """tokenizer.json with its special ids; `vocab_size` at least the
  tokenizer's (a model's vocabulary may be padded beyond it)."""

  def __init__(self, tok, path: str, vocab_size: int = 0,
               ids: tuple[int, int, int] | None = None):
    self._tok, self.path = tok, path
    spec = json.loads(tok.to_str())
    self.byte_level = _has_type(spec.get('decoder'), 'ByteLevel') or (
        _has_type(spec.get('pre_tokenizer'), 'ByteLevel'))
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    if vocab_size and vocab_size < size:
      raise ValueError(f'{path} holds {size} tokens, more than '
                       f'config.data.vocab_size={vocab_size}: set it to '
                       f'{size} or more (the model\'s vocabulary), or 0')
    self.vocab_size = max(size, vocab_size)
    self.bos_id, self.eos_id, self.pad_id = ids or special_ids(
        tok, os.path.dirname(os.path.abspath(path)), path)
    strings = self.token_strings()
    self.token_bytes = np.array([len(b) for b in strings], np.int32)
    self.prefix_bytes = np.zeros(self.vocab_size, np.int32)
    lead = np.array([b[:1] == b' ' for b in strings], np.int32)
    probe = self.encode([PROBE])[0]
    extra = int(self.token_bytes[probe].sum()) - len(PROBE.encode('utf-8'))
    if extra == 1 and lead[probe[0]]:
      self.prefix_bytes = lead  # A space before every document.
    self.check_lossless()

  @classmethod
  def load(cls, path: str, vocab_size: int = 0,
           ids: tuple[int, int, int] | None = None) -> 'HFTokenizer':
    """`path`'s tokenizer; its (bos, eos, pad) `ids` given, or found beside
    it (`special_ids`)."""
    import tokenizers as tk  # pylint: disable=import-outside-toplevel
    try:
      tok = tk.Tokenizer.from_file(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'{path} is not a tokenizer.json the tokenizers '
                       f'library reads ({e})') from None
    return cls(tok, path, vocab_size, ids)

  def check_lossless(self) -> None:
    """Bits per byte holds only if the tokens spell the text's bytes: the
    probe decodes back, and its tokens' bytes (less a document's prefix)
    are the probe's."""
    ids = self.encode([PROBE])[0]
    counted = int(self.token_bytes[ids].sum() - self.prefix_bytes[ids[0]])
    decoded = self.decode(ids)
    if self.prefix_bytes[ids[0]]:  # ByteLevel's prefix space decodes.
      decoded = decoded.removeprefix(' ')
    if decoded != PROBE or counted != len(PROBE.encode('utf-8')):
      raise ValueError(
          f'{self.path}: this tokenizer does not keep every byte of the text '
          f'({PROBE!r} decodes to {decoded!r}, its tokens count {counted} '
          f'bytes, not {len(PROBE.encode())}), so bits per byte cannot be '
          'counted; use a byte-level BPE or SentencePiece tokenizer with '
          'byte fallback, or data.tokenizer=bpe')

  def token_strings(self) -> list[bytes]:
    """The bytes each token stands for (b'' for special tokens and ids
    beyond the tokenizer's)."""
    added = {t['id']: t for t in json.loads(self._tok.to_str()).get(
        'added_tokens', [])}
    out = [b''] * self.vocab_size
    for piece, i in self._tok.get_vocab(with_added_tokens=True).items():
      if i in added:
        out[i] = b'' if added[i].get('special') else piece.encode('utf-8')
      else:
        out[i] = piece_bytes(piece, self.byte_level)
    for i in (self.bos_id, self.eos_id, self.pad_id):
      out[i] = b''  # Not text, even where a vocabulary lists them as pieces.
    return out

  def to_str(self) -> str:
    return self._tok.to_str()

  def encode(self, texts: list[str]) -> list[np.ndarray]:
    dtype = np.uint16 if self.vocab_size <= 65536 else np.int32
    return [np.asarray(e.ids, dtype) for e in
            self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def _read(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    try:
      found = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e})') from None
  return found if isinstance(found, dict) else {}


def special_ids(tok, folder: str, path: str) -> tuple[int, int, int]:
  """(bos, eos, pad) ids: see the module doc."""
  tokens = _read(os.path.join(folder, 'tokenizer_config.json'))
  configs = [_read(os.path.join(folder, 'generation_config.json')),
             # A run converted from an HF folder: its config.json's ids
             # (kd.convert.hf.SPECIAL_TOKENS).
             _read(os.path.join(folder, 'special_tokens.json'))]
  hf_config = _read(os.path.join(folder, 'config.json'))
  if 'model_type' in hf_config:  # An HF folder's, not a kd run's.
    configs.append(hf_config)
  ids = {}
  for key in ('bos', 'eos', 'pad'):
    token = tokens.get(f'{key}_token')
    if isinstance(token, dict):
      token = token.get('content')
    if isinstance(token, str):
      if tok.token_to_id(token) is None:
        raise ValueError(f'{folder}/tokenizer_config.json: {key}_token '
                         f'{token!r} is not in {path}')
      ids[key] = tok.token_to_id(token)
      continue
    for c in configs:
      found = c.get(f'{key}_token_id')
      found = found[0] if isinstance(found, list) and found else found
      if isinstance(found, int):
        ids[key] = found
        break
  if 'eos' not in ids:
    raise ValueError(f'{path}: no end-of-text token (eos_token in '
                     'tokenizer_config.json or eos_token_id in '
                     'generation_config.json / config.json beside it): '
                     'documents are packed between bos and eos; add one')
  return ids.get('bos', ids['eos']), ids['eos'], ids.get('pad', ids['eos'])


def source_path(tokenizer_path: str, teacher_dir: str) -> str:
  """The tokenizer.json a run's 'hf' tokenizer comes from:
  `tokenizer_path` (the file, or the folder holding it), else the teacher
  run's."""
  where = tokenizer_path or teacher_dir
  if not where:
    raise ValueError("config.data.tokenizer='hf' reads a tokenizer.json: set "
                     'config.data.tokenizer_path to it (or to the folder '
                     'holding it), or distill from a run that has one '
                     '(distill.teacher.workdir)')
  path = (os.path.join(where, 'tokenizer.json') if os.path.isdir(where)
          else where)
  if not os.path.isfile(path):
    field = ('data.tokenizer_path' if tokenizer_path else
             'distill.teacher.workdir')
    raise FileNotFoundError(f'config.{field}={where!r}: no tokenizer.json '
                            f'there ({path}); point it at an HF tokenizer '
                            'file or a folder with one')
  return path


def check_kept(kept: str, tokenizer_path: str, teacher_dir: str) -> None:
  """A run's kept tokenizer.json must still be its source's (when it has
  one: a converted run's is its own): another would tokenize differently
  from the run's first steps."""
  if not tokenizer_path and not (teacher_dir and os.path.exists(
      os.path.join(teacher_dir, 'tokenizer.json'))):
    return
  source = source_path(tokenizer_path, teacher_dir)
  if os.path.abspath(source) == os.path.abspath(kept):
    return
  with open(kept, 'rb') as f, open(source, 'rb') as g:
    if f.read() != g.read():
      raise ValueError(
          f'{kept} (the tokenizer this run started with) differs from '
          f'{source}: a run tokenizes one way throughout; use a new --workdir,'
          f' or delete {kept} to start this run over with the new one')


def copy_to_run(path: str, run_dir: str) -> None:
  """Keeps the tokenizer of `path` (and the special-token files beside it)
  in `run_dir`, with the ids resolved there as they were at `path`."""
  tok = HFTokenizer.load(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(run_dir, exist_ok=True)
  for name in FILES[1:]:
    if os.path.exists(os.path.join(folder, name)):
      with open(os.path.join(folder, name), 'rb') as f:
        files.write_bytes(os.path.join(run_dir, name), f.read())
  if not os.path.exists(os.path.join(folder, 'tokenizer_config.json')):
    # The ids came from a config.json, which the run does not keep.
    files.write_json(os.path.join(run_dir, 'tokenizer_config.json'), {
        f'{k}_token': tok._tok.id_to_token(i) for k, i in  # pylint: disable=protected-access
        (('bos', tok.bos_id), ('eos', tok.eos_id), ('pad', tok.pad_id))})
  # tokenizer.json last: a run directory with it holds the whole tokenizer.
  with open(path, 'rb') as f:
    files.write_bytes(os.path.join(run_dir, 'tokenizer.json'), f.read())
