"""Datasets through tensorflow-datasets (see `input_pipeline`; text corpora
for language models: `text`)."""
from kd.data.input_pipeline import (DatasetNotPreparedError, DatasetSpec,
                                    OFFLINE, builder, eval_batches,
                                    indexed_batches, load_split, names,
                                    num_examples, spec, train_batches)
from kd.data import text
