"""Hugging Face `bert` and `distilbert` <-> kd's `transformer_encoder`, both
ways, through `kd.convert.hf_table`'s family registry.

Both HF models are post-LN encoders with learned positions, biases
everywhere and a masked-LM head tied to the token embeddings, so one kd model
holds either: DistilBERT is BERT without token types (`type_vocab_size=0`)
and with LayerNorm eps fixed at 1e-12.

  HF (bert / distilbert)                          kd transformer_encoder
  embeddings.word_embeddings                      embed/embedding
  embeddings.position_embeddings                  pos_embed/embedding
  embeddings.token_type_embeddings (bert)         type_embed/embedding
  embeddings.LayerNorm                            embed_norm
  attention.self.{query,key,value} / {q,k,v}_lin  blocks_i/attn/{query,...}
  attention.output.dense / out_lin                blocks_i/attn/out
  attention.output.LayerNorm / sa_layer_norm      blocks_i/attn_norm
  intermediate.dense / ffn.lin1                   blocks_i/mlp/up
  output.dense / ffn.lin2                         blocks_i/mlp/down
  output.LayerNorm / output_layer_norm            blocks_i/mlp_norm
  cls.predictions.transform.dense / vocab_transform      mlm/transform
  cls.predictions.transform.LayerNorm / vocab_layer_norm mlm/norm
  cls.predictions.bias / vocab_projector.bias            mlm/bias
  bert.pooler.dense / pre_classifier              pooler   (with num_labels)
  classifier                                      classifier

The architectures read are the masked-LM ones (BertForMaskedLM,
BertForPreTraining, DistilBertForMaskedLM) and *ForSequenceClassification
with its `id2label` classes as `num_labels` and its pad_token_id as `pad_id`
(the attention mask from the token ids): a fine-tuned classifier without the
masked-LM head becomes `head='cls'` (`for_weights`), one that holds it too
(kd's export of a masked-LM encoder with a [CLS] head) keeps both. A checkpoint saved by
BertForPreTraining (bert-base-uncased's) also holds the next-sentence head
`cls.seq_relationship` and the pooler: dropped, as BertForMaskedLM drops
them. The tied decoder weight (and bias) some checkpoints repeat must equal
the embeddings (the bias).

Export picks distilbert for an encoder without token types and bert
otherwise (`model_type_for`); post-LN only (a pre-LN encoder has no HF
counterpart here), and the [CLS] head's activation must be the family's
(tanh for bert's pooler, relu for distilbert's pre_classifier).
"""
from kd.convert import hf_table as t
from kd.models import encoder

MODEL = 'transformer_encoder'
# The options a conversion sets (the rest, dtype and return_attention, are
# how a run computes, not what the weights are).
OPTIONS = ('d_model', 'num_layers', 'num_heads', 'mlp_hidden', 'max_len',
           'type_vocab_size', 'norm', 'norm_eps', 'mlp', 'num_labels',
           'pooler_activation')
# transformers' hidden_act (distilbert: activation) <-> kd's `mlp`.
ACTIVATIONS = {'gelu': 'gelu_exact', 'gelu_new': 'gelu',
               'gelu_pytorch_tanh': 'gelu'}
KD_ACTIVATIONS = {'gelu_exact': 'gelu', 'gelu': 'gelu_new'}
POOLER = {'bert': 'tanh', 'distilbert': 'relu'}
PREFIX = {'bert': 'bert.', 'distilbert': 'distilbert.'}
MLM_ARCHITECTURES = {'bert': ('BertForMaskedLM', 'BertForPreTraining'),
                     'distilbert': ('DistilBertForMaskedLM',)}
CLASSIFIER = {'bert': 'BertForSequenceClassification',
              'distilbert': 'DistilBertForSequenceClassification'}
DISTILBERT_EPS = 1e-12  # transformers' DistilBERT hard-codes it.
# transformers' values for the config keys read (BertConfig,
# DistilBertConfig), where a config.json omits them.
HF_DEFAULTS = {
    'bert': dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072,
                 hidden_act='gelu', max_position_embeddings=512,
                 type_vocab_size=2, layer_norm_eps=1e-12,
                 tie_word_embeddings=True, is_decoder=False,
                 add_cross_attention=False,
                 position_embedding_type='absolute'),
    'distilbert': dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12,
                       hidden_dim=3072, activation='gelu',
                       max_position_embeddings=512, tie_word_embeddings=True),
}


def model_type_for(kwargs: dict) -> str:
  """The HF family a transformer_encoder exports to: distilbert without
  token-type embeddings, bert with them."""
  return 'bert' if kwargs.get('type_vocab_size', 2) else 'distilbert'


def _num_labels(r: t.Reader, model_type: str) -> int:
  architectures = r('architectures') or [MLM_ARCHITECTURES[model_type][0]]
  supported = (*MLM_ARCHITECTURES[model_type], CLASSIFIER[model_type])
  if len(architectures) != 1 or architectures[0] not in supported:
    raise t.UnsupportedError(
        f'{model_type} config architectures={architectures} is not '
        f'supported; supported: {", ".join(supported)} (with the masked-LM '
        f'head)')
  if architectures[0] != CLASSIFIER[model_type]:
    return 0
  return len(r('id2label') or {}) or r('num_labels', 2)


def _kd_config(model_type: str, cfg: dict) -> tuple[str, dict, int]:
  r = t.Reader(cfg, HF_DEFAULTS[model_type], model_type)
  if r('tie_word_embeddings') is not True:
    raise t.UnsupportedError(
        f'{model_type} config tie_word_embeddings=False is not supported; '
        f'supported: True (the masked-LM decoder is the token embeddings)')
  if model_type == 'bert':
    for key, allowed in (('position_embedding_type', ('absolute',)),
                         ('is_decoder', (False,)),
                         ('add_cross_attention', (False,))):
      r.require(key, allowed)
    kwargs = dict(d_model=r('hidden_size'), num_layers=r('num_hidden_layers'),
                  num_heads=r('num_attention_heads'),
                  mlp_hidden=r('intermediate_size'),
                  type_vocab_size=r('type_vocab_size'),
                  norm_eps=float(r('layer_norm_eps')),
                  mlp=ACTIVATIONS[r.require('hidden_act',
                                            tuple(ACTIVATIONS))])
    if not kwargs['type_vocab_size']:
      raise t.UnsupportedError('bert config type_vocab_size=0 is not '
                               'supported; supported: >= 1')
  else:  # sinusoidal_pos_embds: the fixed table is saved like a learned one.
    kwargs = dict(d_model=r('dim'), num_layers=r('n_layers'),
                  num_heads=r('n_heads'), mlp_hidden=r('hidden_dim'),
                  type_vocab_size=0, norm_eps=DISTILBERT_EPS,
                  mlp=ACTIVATIONS[r.require('activation',
                                            tuple(ACTIVATIONS))])
  kwargs['max_len'] = r('max_position_embeddings')
  kwargs = complete(dict(kwargs, num_labels=_num_labels(r, model_type)))
  if kwargs['num_labels']:  # transformers' default pad id is 0.
    kwargs['pad_id'] = r('pad_token_id', 0)
  # The family's [CLS] head, for a classifier fine-tuned from it later.
  kwargs['pooler_activation'] = POOLER[model_type]
  return MODEL, kwargs, r('vocab_size')


def _refuse(model_type: str, option: str, value, supported: str):
  raise t.UnsupportedError(
      f'transformer_encoder option {option}={value!r} has no {model_type} '
      f'equivalent; supported: {supported}')


def _hf_config(model_type: str, kwargs: dict, vocab_size: int) -> dict:
  k = complete(kwargs)
  if k['norm'] != 'post':
    _refuse(model_type, 'norm', k['norm'], "'post' (BERT and DistilBERT "
            'are post-LN)')
  if k['mlp'] not in KD_ACTIVATIONS:
    _refuse(model_type, 'mlp', k['mlp'], ', '.join(map(repr, KD_ACTIVATIONS)))
  if k['num_labels'] and k['pooler_activation'] != POOLER[model_type]:
    _refuse(model_type, 'pooler_activation', k['pooler_activation'],
            repr(POOLER[model_type]))
  act = KD_ACTIVATIONS[k['mlp']]
  if model_type == 'bert':
    if not k['type_vocab_size']:
      _refuse(model_type, 'type_vocab_size', 0, '>= 1 (0 is distilbert)')
    cfg = dict(hidden_size=k['d_model'], num_hidden_layers=k['num_layers'],
               num_attention_heads=k['num_heads'],
               intermediate_size=k['mlp_hidden'], hidden_act=act,
               type_vocab_size=k['type_vocab_size'],
               layer_norm_eps=k['norm_eps'],
               position_embedding_type='absolute')
  else:
    if k['type_vocab_size']:
      _refuse(model_type, 'type_vocab_size', k['type_vocab_size'],
              '0 (distilbert has no token types)')
    if k['norm_eps'] != DISTILBERT_EPS:
      _refuse(model_type, 'norm_eps', k['norm_eps'], f'{DISTILBERT_EPS}')
    cfg = dict(dim=k['d_model'], n_layers=k['num_layers'],
               n_heads=k['num_heads'], hidden_dim=k['mlp_hidden'],
               activation=act, sinusoidal_pos_embds=False)
  cfg.update(model_type=model_type, vocab_size=vocab_size,
             max_position_embeddings=k['max_len'], tie_word_embeddings=True,
             architectures=[CLASSIFIER[model_type] if k['num_labels']
                            else MLM_ARCHITECTURES[model_type][0]])
  if kwargs.get('pad_id', -1) >= 0:
    cfg['pad_token_id'] = kwargs['pad_id']
  if k['num_labels']:
    cfg['id2label'] = {str(i): f'LABEL_{i}' for i in range(k['num_labels'])}
    cfg['label2id'] = {f'LABEL_{i}': i for i in range(k['num_labels'])}
  return cfg


def complete(kwargs: dict) -> dict:
  """`kwargs` with every option conversion sets (the model's defaults for
  those not given), mlp_hidden explicit; without a [CLS] head the pooler's
  activation is moot, so it is the default."""
  k = {f: getattr(encoder.TransformerEncoder, f) for f in OPTIONS}
  k.update({n: v for n, v in kwargs.items() if n in OPTIONS})
  k['mlp_hidden'] = k['mlp_hidden'] or 4 * k['d_model']
  if not k['num_labels']:
    k['pooler_activation'] = encoder.TransformerEncoder.pooler_activation
  return k


# HF module names per family: embeddings, layer prefix, per-layer modules
# (query, key, value, out, attn_norm, up, down, mlp_norm), MLM head
# (transform, norm, bias), [CLS] head (pooler, classifier).
NAMES = {
    'bert': dict(
        embed='bert.embeddings.', layer='bert.encoder.layer.',
        block=('attention.self.query', 'attention.self.key',
               'attention.self.value', 'attention.output.dense',
               'attention.output.LayerNorm', 'intermediate.dense',
               'output.dense', 'output.LayerNorm'),
        mlm=('cls.predictions.transform.dense',
             'cls.predictions.transform.LayerNorm', 'cls.predictions.bias'),
        cls=('bert.pooler.dense', 'classifier')),
    'distilbert': dict(
        embed='distilbert.embeddings.', layer='distilbert.transformer.layer.',
        block=('attention.q_lin', 'attention.k_lin', 'attention.v_lin',
               'attention.out_lin', 'sa_layer_norm', 'ffn.lin1', 'ffn.lin2',
               'output_layer_norm'),
        mlm=('vocab_transform', 'vocab_layer_norm', 'vocab_projector.bias'),
        cls=('pre_classifier', 'classifier')),
}


def _table(model_type: str, kwargs: dict, vocab_size: int) -> list[t.Tensor]:
  k = complete(kwargs)
  d, h, m = k['d_model'], k['num_heads'], k['mlp_hidden']
  hd = d // h
  names = NAMES[model_type]

  def norm(hf, kd):
    return [t.copy(f'{hf}.weight', f'{kd}/scale', (d,)),
            t.copy(f'{hf}.bias', f'{kd}/bias', (d,))]

  def dense(hf, kd, n_in, n_out):
    return [t.linear(f'{hf}.weight', f'{kd}/kernel', (n_out, n_in),
                     (n_in, n_out)),
            t.copy(f'{hf}.bias', f'{kd}/bias', (n_out,))]

  e = names['embed']
  out = [t.copy(f'{e}word_embeddings.weight', 'embed/embedding',
                (vocab_size, d)),
         t.copy(f'{e}position_embeddings.weight', 'pos_embed/embedding',
                (k['max_len'], d))]
  if k['type_vocab_size']:
    out.append(t.copy(f'{e}token_type_embeddings.weight',
                      'type_embed/embedding', (k['type_vocab_size'], d)))
  out += norm(f'{e}LayerNorm', 'embed_norm')
  for i in range(k['num_layers']):
    hf = [f'{names["layer"]}{i}.{n}' for n in names['block']]
    kd = f'blocks_{i}'
    for name, part in zip(hf[:3], ('query', 'key', 'value')):
      out += [t.linear(f'{name}.weight', f'{kd}/attn/{part}/kernel',
                       (d, d), (d, h, hd)),
              t.reshape(f'{name}.bias', f'{kd}/attn/{part}/bias', (d,),
                        (h, hd))]
    out += [t.linear(f'{hf[3]}.weight', f'{kd}/attn/out/kernel', (d, d),
                     (h, hd, d)),
            t.copy(f'{hf[3]}.bias', f'{kd}/attn/out/bias', (d,))]
    out += norm(hf[4], f'{kd}/attn_norm')
    out += dense(hf[5], f'{kd}/mlp/up', d, m)
    out += dense(hf[6], f'{kd}/mlp/down', m, d)
    out += norm(hf[7], f'{kd}/mlp_norm')
  if kwargs.get('head', 'mlm') == 'mlm':
    transform, mlm_norm, bias = names['mlm']
    out += dense(transform, 'mlm/transform', d, d)
    out += norm(mlm_norm, 'mlm/norm')
    out.append(t.copy(bias, 'mlm/bias', (vocab_size,)))
  if k['num_labels']:
    pooler, classifier = names['cls']
    out += dense(pooler, 'pooler', d, d)
    out += dense(classifier, 'classifier', d, k['num_labels'])
  return out


def _duplicates(model_type: str, kwargs: dict) -> dict[str, str]:
  if kwargs.get('head') == 'cls':  # No masked-LM decoder to repeat.
    return {}
  embed = f'{NAMES[model_type]["embed"]}word_embeddings.weight'
  if model_type == 'bert':
    return {'cls.predictions.decoder.weight': embed,
            'cls.predictions.decoder.bias': 'cls.predictions.bias'}
  return {'vocab_projector.weight': embed}


# Checkpoints converted from TensorFlow BERT (bert-base-uncased on the Hub)
# name LayerNorm's weight and bias gamma and beta.
RENAMES = ((r'\.LayerNorm\.gamma$', '.LayerNorm.weight'),
           (r'\.LayerNorm\.beta$', '.LayerNorm.bias'))
DROPPED = {
    'bert': (r'^(bert\.)?embeddings\.position_ids$',
             r'^cls\.seq_relationship\.', r'^(bert\.)?pooler\.dense\.'),
    'distilbert': (r'^(distilbert\.)?embeddings\.position_ids$',),
}


def _for_weights(model_type: str, kwargs: dict, vocab_size: int,
                 names: set[str]) -> dict:
  """A classifier folder without the masked-LM head (a fine-tuned
  *ForSequenceClassification): head='cls', the vocabulary a kwarg."""
  transform = NAMES[model_type]['mlm'][0] + '.weight'
  if kwargs.get('num_labels') and not any(
      n == transform or n.endswith('.' + transform) for n in names):
    return dict(kwargs, head='cls', vocab_size=vocab_size)
  return kwargs


def _family(model_type: str) -> t.Family:
  bind = lambda f: lambda *a: f(model_type, *a)
  return t.Family(
      model_type=model_type,
      architecture=MLM_ARCHITECTURES[model_type][0], kd_model=MODEL,
      kd_config=bind(_kd_config), hf_config=bind(_hf_config),
      table=bind(_table), prefixes=(PREFIX[model_type],),
      dropped=DROPPED[model_type], duplicates=bind(_duplicates),
      renames=RENAMES if model_type == 'bert' else (), complete=complete,
      for_weights=bind(_for_weights),
      default_for=lambda kwargs: model_type_for(kwargs) == model_type)


for _model_type in ('bert', 'distilbert'):
  t.register(_family(_model_type))
