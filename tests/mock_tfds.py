"""A TFDS data dir where real datasets look prepared (metadata only), for
`tfds.testing.mock_data(data_dir=...)`: the loaders then take their normal
path (is_prepared, split sizes) while the records are generated."""
import os

import tensorflow_datasets as tfds


def metadata_dir(root: str, splits: dict[str, tuple[str, ...]],
                 num_examples: int) -> str:
  for name, names in splits.items():
    b = tfds.builder(name, data_dir=root)
    b.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0)
        for s in names]))
    os.makedirs(b.data_dir, exist_ok=True)
    b.info.write_to_directory(b.data_dir)
  return root
