"""Datasets through tensorflow-datasets (see `input_pipeline`)."""
from kd.data.input_pipeline import (DatasetNotPreparedError, DatasetSpec,
                                    OFFLINE, builder, eval_batches,
                                    indexed_batches, load_split, names,
                                    num_examples, spec, train_batches)
