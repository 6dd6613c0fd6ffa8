"""Networks, the deformable convolution they use, losses and the model file."""
