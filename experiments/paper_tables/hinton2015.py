"""Hinton, Vinyals & Dean 2015, MNIST test errors out of 10,000: teacher
784-1200-1200-10 67 errors; student 784-800-800-10 146 errors from hard
labels and 74 distilled at T=20 (reported here as accuracies)."""
SOURCE = 'Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015), MNIST'
KEYS = ('model', 'method')
PUBLISHED = {('teacher_mlp', 'scratch'): 1 - 67 / 10000,
             ('student_mlp', 'scratch'): 1 - 146 / 10000,
             ('student_mlp', 'kd'): 1 - 74 / 10000}
