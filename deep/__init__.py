"""Fully convolutional networks, their upsampling variants and training."""
