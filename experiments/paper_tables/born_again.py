"""Born-Again Networks (Furlanello et al., ICML 2018), CIFAR-100
DenseNet-80-80 test error: teacher 17.16%, BAN generations 16.26 / 16.30 /
15.50, ensemble of 3: 15.14 (as accuracies)."""
SOURCE = 'Furlanello et al., "Born-Again Neural Networks", ICML 2018, CIFAR-100 DenseNet-80-80'
KEYS = ('generation',)
PUBLISHED = {('0',): 1 - 0.1716, ('1',): 1 - 0.1626, ('2',): 1 - 0.1630,
             ('3',): 1 - 0.1550, ('ensemble',): 1 - 0.1514}
