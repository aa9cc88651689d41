"""HW1: k-nearest neighbours and logistic regression on forest cover types (UCI Covertype)."""
