"""seqlvm: sequential latent-variable models in PyTorch."""

__version__ = "0.1.0"
