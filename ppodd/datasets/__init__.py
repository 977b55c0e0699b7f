"""Data sets as tensors: one loader a file, the decoded-image cache, and ZCA whitening."""
