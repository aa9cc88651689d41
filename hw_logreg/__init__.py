"""HW2: gradient descent in 2-D, a batch generator, and elastic-net logistic regression in NumPy."""
