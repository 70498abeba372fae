"""The Differentiable Neural Dictionary (DND): a batched, differentiable kNN memory.

:class:`DND` stores B fixed-capacity dictionaries with LRU overwrite and an optional tabular
update; :func:`dnd_lookup` is its pure kernel-weighted kNN lookup over given tensors.
"""

from seqlvm.memory.dnd import DND, DNDLookup, dnd_lookup

__all__ = ["DND", "DNDLookup", "dnd_lookup"]
