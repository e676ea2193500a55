"""timm's VisionTransformer and DeiT (`timm.models.vision_transformer`,
`timm.models.deit`, the DeiT release's checkpoints): renames to kd's
`vit_*`, `deit_*` and `deit_*_distilled` (kd.models.vit, laid out as timm).

  patch_embed.proj        -> patch_embed (the patch convolution)
  blocks.{i}.attn.qkv     -> blocks{i}/attn/qkv (q, k, v fused in timm's
                             order [3, heads, head_dim]: a plain transpose)
  blocks.{i}.mlp.fc{1,2}  -> blocks{i}/fc{1,2}
  cls_token, dist_token, pos_embed, norm, head, head_dist: same names

The head count is not in any shape: it comes from the model name (or
`--kwargs`), so name the model the checkpoint was trained as. A
checkpoint at another input size than 224 needs `--image_size` (the
position embeddings' count depends on it).
"""
from kd.convert.common import Rules
from kd.models import vit

DATA = 'imagenet2012'  # Classes and input size: kd.data's spec of it.

_VIT = [(r'^patch_embed\.proj$', 'patch_embed'),
        (r'^blocks\.(\d+)\.', r'blocks\1/'),
        (r'/mlp\.', '/'),
        (r'\.', '/')]

RULES: dict[str, Rules] = {
    name: _VIT for size in vit.SIZES
    for name in (f'vit_{size}', f'deit_{size}', f'deit_{size}_distilled')}
# timm's names of the same architectures (16x16 patches, 224x224 inputs).
ALIASES = {
    **{f'{kind}_{size}_patch16_224': f'{kind}_{size}'
       for kind in ('vit', 'deit') for size in vit.SIZES},
    **{f'deit_{size}_distilled_patch16_224': f'deit_{size}_distilled'
       for size in vit.SIZES},
    # At 384x384: with --image_size=384.
    'deit_base_patch16_384': 'deit_base',
    'deit_base_distilled_patch16_384': 'deit_base_distilled'}
