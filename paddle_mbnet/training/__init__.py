"""Training on CIFAR-10: the typed config, the data pipeline, the loop, checkpoints, weight averaging."""
