"""Gymnasium environments that generate training videos (importable as ``seqlvm.envs``)."""
