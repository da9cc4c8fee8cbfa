"""Cyclical learning rates and the LR range test: DD2424-style softmax and two-layer nets on CIFAR-10 pixels."""
