"""Training: precision and distribution setup, optimizers, callbacks, feature cache, the loop."""
