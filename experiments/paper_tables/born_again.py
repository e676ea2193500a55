"""Born-Again Networks (Furlanello et al., ICML 2018), CIFAR-100
DenseNet-80-80 test error: teacher 17.16%, BAN generations 16.26 / 16.30 /
15.50 (as accuracies). Keys are the generations, the pipeline stages of
`experiments/born_again/config.py`; one variant's runs at a time:

  python -m kd.tables runs/born_again/ban_s* --stage=gen0,gen1,gen2,gen3 \
      --paper=experiments/paper_tables/born_again.py

(The ensembles, 15.14% for BAN's three, are in each run's generations.json,
from `experiments.born_again.score`.)"""
SOURCE = 'Furlanello et al., "Born-Again Neural Networks", ICML 2018, CIFAR-100 DenseNet-80-80'
KEYS = ('stage',)
PUBLISHED = {('gen0',): 1 - 0.1716, ('gen1',): 1 - 0.1626,
             ('gen2',): 1 - 0.1630, ('gen3',): 1 - 0.1550}
