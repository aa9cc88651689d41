"""HW8: hard-hat detection with CenterNet, natively in PyTorch and through MMDetection."""
