"""MNIST-1D baselines (Greydanus 2020, 'Scaling down deep learning'), test
accuracy on the 1,000-example test split."""
SOURCE = ('Greydanus, "Scaling Down Deep Learning" (2020), MNIST-1D '
          'baselines: logistic regression 32%, MLP 68%, CNN 94%, GRU 91%')
KEYS = ('model',)
PUBLISHED = {('logreg',): 0.32, ('mlp',): 0.68, ('cnn1d',): 0.94,
             ('gru',): 0.91}
