"""Hinton, Vinyals & Dean 2015, MNIST test errors out of 10,000: teacher
784-1200-1200-10 67 errors; student 784-800-800-10 146 errors from hard
labels and 74 distilled at T=20 (reported here as accuracies). Keys as
`kd.tables` finds them in runs of the `mlp` model: its hidden widths
(`model.kwargs.hidden`) and method ('scratch' from labels, 'kd')."""
SOURCE = 'Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015), MNIST'
KEYS = ('model', 'model.kwargs.hidden', 'method')
PUBLISHED = {('mlp', '1200-1200', 'scratch'): 1 - 67 / 10000,
             ('mlp', '800-800', 'scratch'): 1 - 146 / 10000,
             ('mlp', '800-800', 'kd'): 1 - 74 / 10000}
