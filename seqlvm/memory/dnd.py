"""The Differentiable Neural Dictionary (DND) of Neural Episodic Control (Pritzel et al., 2017).

A DND maps keys ``h_i`` (vectors of size d) to values ``v_i`` (vectors of size v). A lookup with a
query ``h`` returns the ``k`` nearest stored keys (exact Euclidean kNN) and kernel weights

    w_i = K(h, h_i) / sum_{j in N_k(h)} K(h, h_j),    K(h, h_i) = 1 / (||h - h_i||^2 + delta)

The selection of the neighbours is not differentiable; the squared distances of the selected keys
are recomputed with autograd, so gradients reach the query, the stored keys and the stored values
(NEC trains the dictionary through them; GTM-SM trains its state-space model and encoder this way).
``log w_i`` is computed with a log-sum-exp, so it stays accurate when the weights are extremely
peaked (small ``delta``, a query on top of a key).

:func:`dnd_lookup` is the pure lookup over given tensors (GTM-SM's memory of one sequence is just
the keys and values of its memorisation phase). :class:`DND` is the batched, fixed-capacity store
around it, one dictionary per batch element, with least-recently-used overwrite and NEC's optional
tabular update of a key that is already present::

    import torch
    from seqlvm.memory import DND

    B, T, d, v = 4, 16, 2, 8
    dnd = DND(batch_size=B, capacity=32, key_dim=d, value_dim=v, delta=1e-4)
    keys, values = torch.randn(B, T, d), torch.randn(B, T, v, requires_grad=True)
    dnd.write(keys, values, mask=torch.rand(B, T) < 0.8)   # (B, T) True = write this step
    out = dnd.lookup(torch.randn(B, 5, d), k=3)             # 5 queries per dictionary
    out.weights.shape, out.values.shape                     # (4, 5, 3), (4, 5, 3, 8)
    out.average().sum().backward()                          # reaches `values` (and the keys)

Memory: the stored keys and values are tensors, (B, capacity, d) and (B, capacity, v). A write
that carries gradient keeps the written rows in the autograd graph attached to the store until
:meth:`DND.clear` or :meth:`DND.detach_`, so a long-lived memory (NEC) should be detached after each
optimisation step; a per-sequence memory (GTM-SM) is freed with the sequence's graph. A lookup keeps
O(B Q k (d + v)) numbers for backward; the exact search itself needs O(B Q capacity) transient work.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

_EXACT = "donot_use_mm_for_euclid_dist"  # |a|^2 + |b|^2 - 2ab cancels for near-equal keys


class DNDLookup(NamedTuple):
    """The k nearest neighbours of each query and their kernel weights, nearest first.

    weights:     (B, Q, k)     w_i, summing to 1 over the valid neighbours of each query.
    log_weights: (B, Q, k)     log w_i, computed with a log-sum-exp.
    values:      (B, Q, k, v)  the neighbours' values v_i.
    indices:     (B, Q, k)     int64 slots of the neighbours in the dictionary.

    When a dictionary holds n < k entries, positions n..k-1 are padding: weight 0, log-weight
    -inf, value 0 and index -1. A dictionary with no entries returns padding only (its weights sum
    to 0, not 1).
    """

    weights: Tensor
    log_weights: Tensor
    values: Tensor
    indices: Tensor

    def average(self) -> Tensor:
        """The kernel-weighted value ``o = sum_i w_i v_i`` (NEC's output), shape (B, Q, v)."""
        return (self.weights.unsqueeze(-1) * self.values).sum(-2)


def _check_tensor(fn: str, name: str, value: object, expected: str, rank: int) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor of shape {expected}; got {type(value).__name__}")
    if value.dim() != rank:
        raise ValueError(f"{fn}: {name} must have shape {expected}; got {tuple(value.shape)}")
    return value


def _check_float(fn: str, name: str, value: Tensor, dtype: torch.dtype, device: torch.device) -> None:
    if value.dtype != dtype:
        raise ValueError(f"{fn}: {name} has dtype {value.dtype}; expected {dtype}")
    if value.device != device:
        raise ValueError(f"{fn}: {name} is on {value.device}; expected {device}")


def _check_query(fn: str, query: Tensor, dtype: torch.dtype, device: torch.device) -> None:
    """The query's dtype and device, and finite values: a NaN query has no nearest neighbours
    (every distance compares false), so it would get NaN weights or none, at random."""
    _check_float(fn, "query", query, dtype, device)
    if not bool(torch.isfinite(query).all()):
        raise ValueError(f"{fn}: query must be finite; got {int((~torch.isfinite(query)).sum())} non-finite entries")


# torch.cdist, the exact neighbour search, has no 16-bit kernels.
DTYPES = (torch.float32, torch.float64)


def _check_dtype(fn: str, dtype: object) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"{fn}: dtype must be torch.float32 or torch.float64; got {dtype!r}")
    return dtype


def _check_k(fn: str, k: object, slots: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{fn}: k must be an int; got {type(k).__name__}")
    if not 1 <= k <= slots:
        raise ValueError(f"{fn}: k must be between 1 and the number of slots {slots}; got {k}")
    return k


def _check_delta(fn: str, delta: object) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0 < delta < math.inf):
        raise ValueError(f"{fn}: delta must be a finite number > 0; got {delta!r}")
    return float(delta)


def dnd_lookup(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    k: int,
    *,
    occupied: Tensor | None = None,
    delta: float = 1e-3,
) -> DNDLookup:
    """Kernel-weighted k-nearest-neighbour lookup in B independent dictionaries.

    ``w_i = K(h, h_i) / sum_{j in N_k(h)} K(h, h_j)`` with ``K(h, h_i) = 1 / (||h - h_i||^2 + delta)``
    over the k nearest occupied keys ``N_k(h)``, found by exact search (``torch.cdist`` without the
    matrix-product shortcut, then ``topk``); which of several keys tied at the k-th distance is
    taken is up to ``topk`` (deterministic on a given device). Differentiable in ``query``,
    ``keys`` and ``values``; not in the choice of N_k.

    Args:
        query:    (B, Q, d) Q queries per dictionary.
        keys:     (B, N, d) stored keys, same dtype and device as ``query``.
        values:   (B, N, v) stored values, same dtype and device.
        k:        number of neighbours, 1 <= k <= N. Dictionaries with fewer than k occupied
                  slots return padding (see :class:`DNDLookup`).
        occupied: (B, N) bool, True where a slot holds an entry; None means all slots do.
        delta:    the kernel's delta > 0 (NEC: 1e-3, GTM-SM: 1e-4).

    Returns:
        :class:`DNDLookup` with weights, log_weights, indices (B, Q, k) and values (B, Q, k, v).
    """
    fn = "dnd_lookup"
    _check_tensor(fn, "query", query, "(B, Q, d)", 3)
    _check_tensor(fn, "keys", keys, "(B, N, d)", 3)
    _check_tensor(fn, "values", values, "(B, N, v)", 3)
    B, N, d = keys.shape
    if query.shape[0] != B or query.shape[2] != d:
        raise ValueError(f"{fn}: query must have shape ({B}, Q, {d}) to match keys; got {tuple(query.shape)}")
    if values.shape[:2] != (B, N):
        raise ValueError(f"{fn}: values must have shape ({B}, {N}, v) to match keys; got {tuple(values.shape)}")
    if keys.dtype not in DTYPES:
        raise ValueError(f"{fn}: keys must be float32 or float64; got {keys.dtype}")
    _check_query(fn, query, keys.dtype, keys.device)
    _check_float(fn, "values", values, keys.dtype, keys.device)
    if occupied is not None:
        _check_tensor(fn, "occupied", occupied, f"({B}, {N}) bool", 2)
        if occupied.dtype != torch.bool or tuple(occupied.shape) != (B, N):
            raise ValueError(
                f"{fn}: occupied must be a bool tensor of shape ({B}, {N}); got {occupied.dtype} {tuple(occupied.shape)}"
            )
        if occupied.device != keys.device:
            raise ValueError(f"{fn}: occupied is on {occupied.device}; expected {keys.device}")
    k = _check_k(fn, k, N)
    delta = _check_delta(fn, delta)
    return _lookup(query, keys, values, k, occupied, delta)


def _lookup(query: Tensor, keys: Tensor, values: Tensor, k: int, occupied: Tensor | None, delta: float) -> DNDLookup:
    """:func:`dnd_lookup` on validated arguments."""
    B, Q = query.shape[:2]
    with torch.no_grad():
        d2 = torch.cdist(query.detach(), keys.detach(), compute_mode=_EXACT).square_()
        if occupied is not None:
            d2.masked_fill_(~occupied[:, None, :], math.inf)
        slots = d2.topk(k, dim=-1, largest=False, sorted=True).indices  # (B, Q, k)
        if occupied is None:
            valid = torch.ones_like(slots, dtype=torch.bool)
        else:
            valid = occupied.gather(1, slots.reshape(B, Q * k)).reshape(B, Q, k)
    rows = torch.arange(B, device=keys.device)[:, None, None]
    near_keys = keys[rows, slots]  # (B, Q, k, d): gathered with autograd, then distances recomputed
    sq_dist = (query.unsqueeze(-2) - near_keys).square().sum(-1)
    log_kernel = -torch.log(sq_dist + delta)
    # A row with no valid entry has a log-sum-exp of -inf; its nan gradient stays on the padding,
    # which both torch.where calls cut off, so the query, keys and values get exactly 0.
    log_norm = torch.logsumexp(torch.where(valid, log_kernel, -math.inf), -1, keepdim=True)
    log_weights = torch.where(valid, log_kernel - log_norm, -math.inf)
    near_values = torch.where(valid.unsqueeze(-1), values[rows, slots], 0.0)
    indices = torch.where(valid, slots, -1)
    return DNDLookup(log_weights.exp(), log_weights, near_values, indices)


class DND:
    """B differentiable neural dictionaries of fixed capacity, stored as batched tensors.

    State (live tensors, changed in place by :meth:`write`, :meth:`lookup` and :meth:`clear`;
    clone them to keep a snapshot):

    keys:      (B, capacity, d)   stored keys h_i (0 in empty slots).
    values:    (B, capacity, v)   stored values v_i (0 in empty slots).
    occupied:  (B, capacity) bool True where a slot holds an entry.
    last_used: (B, capacity) int64 time of the entry's last write or retrieval; -1 when empty.

    Time is one counter shared by the batch: step t of a write of T steps happens at time
    ``now + t`` and advances the counter by T; a lookup happens at ``now`` and advances it by 1.

    Writes fill empty slots in slot order, then overwrite the least recently used entry (equal
    times: the lowest slot). "Used" means written, updated or - with ``lookup(refresh=True)``, the
    default, as in NEC - returned among a query's k nearest neighbours.

    Tabular update (NEC): with ``update_tolerance`` set, a written key whose nearest stored key
    lies within that Euclidean distance updates that entry instead of adding one:
    ``v_i <- v_i + update_rate * (v - v_i)``, ``h_i <- h``. With ``update_tolerance=0.0`` only an
    exact match updates.

    Args:
        batch_size:       B, the number of independent dictionaries.
        capacity:         the number of slots per dictionary.
        key_dim:          d, the size of a key.
        value_dim:        v, the size of a value.
        delta:            the kernel's delta > 0 (NEC: 1e-3, GTM-SM: 1e-4).
        update_tolerance: distance within which a write updates an existing key; None never does.
        update_rate:      the tabular update's rate alpha in (0, 1] (NEC: 0.1).
        device, dtype:    of the stored keys and values (dtype float32 or float64; default: torch's
                          default dtype). Written keys/values and queries must match them;
                          queries must be finite.
    """

    def __init__(
        self,
        batch_size: int,
        capacity: int,
        key_dim: int,
        value_dim: int,
        *,
        delta: float = 1e-3,
        update_tolerance: float | None = None,
        update_rate: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        fn = "DND"
        for name, size in (("batch_size", batch_size), ("capacity", capacity), ("key_dim", key_dim), ("value_dim", value_dim)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{fn}: {name} must be an int >= 1; got {size!r}")
        self.delta = _check_delta(fn, delta)
        if update_tolerance is not None and (
            isinstance(update_tolerance, bool)
            or not isinstance(update_tolerance, (int, float))
            or not 0 <= update_tolerance < math.inf
        ):
            raise ValueError(f"{fn}: update_tolerance must be None or a finite number >= 0; got {update_tolerance!r}")
        if isinstance(update_rate, bool) or not isinstance(update_rate, (int, float)) or not 0 < update_rate <= 1:
            raise ValueError(f"{fn}: update_rate must be a number in (0, 1]; got {update_rate!r}")
        dtype = _check_dtype(fn, torch.get_default_dtype() if dtype is None else dtype)
        self.batch_size, self.capacity, self.key_dim, self.value_dim = batch_size, capacity, key_dim, value_dim
        self.update_tolerance = None if update_tolerance is None else float(update_tolerance)
        self.update_rate = float(update_rate)
        self._device, self._dtype = torch.device("cpu" if device is None else device), dtype
        self._now = 0
        self.clear()
        self._device = self._keys.device  # with its index: torch.device("cuda") != "cuda:0", its tensors' device

    # -- state ---------------------------------------------------------------------------------
    @property
    def keys(self) -> Tensor:
        return self._keys

    @property
    def values(self) -> Tensor:
        return self._values

    @property
    def occupied(self) -> Tensor:
        return self._occupied

    @property
    def last_used(self) -> Tensor:
        return self._last_used

    @property
    def sizes(self) -> Tensor:
        """Number of entries in each dictionary, (B,) int64."""
        return self._occupied.sum(-1)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def __repr__(self) -> str:
        return (
            f"DND(batch_size={self.batch_size}, capacity={self.capacity}, key_dim={self.key_dim}, "
            f"value_dim={self.value_dim}, delta={self.delta}, update_tolerance={self.update_tolerance}, "
            f"update_rate={self.update_rate}, device={self._device}, dtype={self._dtype})"
        )

    def clear(self, batch_mask: Tensor | None = None) -> None:
        """Empty the dictionaries where ``batch_mask`` (B,) bool is True; all of them when None.

        Clearing all allocates fresh storage, which also releases the autograd graph of earlier
        writes; clearing some zeroes their rows in place. The time counter is kept.
        """
        if batch_mask is None:
            B, C = self.batch_size, self.capacity
            self._keys = torch.zeros(B, C, self.key_dim, device=self._device, dtype=self._dtype)
            self._values = torch.zeros(B, C, self.value_dim, device=self._device, dtype=self._dtype)
            self._occupied = torch.zeros(B, C, device=self._device, dtype=torch.bool)
            self._last_used = torch.full((B, C), -1, device=self._device, dtype=torch.int64)
            return
        _check_tensor("DND.clear", "batch_mask", batch_mask, f"({self.batch_size},) bool", 1)
        if batch_mask.dtype != torch.bool or batch_mask.shape[0] != self.batch_size:
            raise ValueError(
                f"DND.clear: batch_mask must be a bool tensor of shape ({self.batch_size},); "
                f"got {batch_mask.dtype} {tuple(batch_mask.shape)}"
            )
        batch_mask = batch_mask.to(self._device)
        self._keys.masked_fill_(batch_mask[:, None, None], 0.0)
        self._values.masked_fill_(batch_mask[:, None, None], 0.0)
        self._occupied.masked_fill_(batch_mask[:, None], False)
        self._last_used.masked_fill_(batch_mask[:, None], -1)

    def detach_(self) -> DND:
        """Cut the stored keys and values from the autograd graph of earlier writes (keeps them)."""
        self._keys = self._keys.detach()
        self._values = self._values.detach()
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DND:
        """Move the dictionaries to ``device`` and/or cast keys and values to ``dtype``; returns self."""
        device = self._device if device is None else torch.device(device)
        dtype = self._dtype if dtype is None else _check_dtype("DND.to", dtype)
        self._keys = self._keys.to(device=device, dtype=dtype)
        self._values = self._values.to(device=device, dtype=dtype)
        self._occupied = self._occupied.to(device)
        self._last_used = self._last_used.to(device)
        self._device, self._dtype = self._keys.device, dtype
        return self

    # -- writing and reading ---------------------------------------------------------------------
    def write(self, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        """Write a sequence of T (key, value) pairs into each dictionary, in step order.

        Step t of dictionary b is written when ``mask[b, t]`` is True and its key and value hold
        no NaN (NaN means missing). It goes to an empty slot, else to the least recently used one,
        or - with ``update_tolerance`` set - updates the entry whose key lies within tolerance
        (see the class docstring). Keys and values keep their autograd history. Without
        ``update_tolerance`` all steps are placed at once; with it, one step at a time (a step may
        update an entry that an earlier step of the same call wrote).

        Args:
            keys:   (B, T, d) keys h_t, the store's dtype and device.
            values: (B, T, v) values v_t, the store's dtype and device.
            mask:   (B, T) bool, True = write this step; None writes every step.

        Returns:
            (B, T) int64: the slot that now holds step t's entry (an added or updated one), or -1
            when the step was not written or a later step of the same call overwrote its entry.
        """
        fn = "DND.write"
        B, d, v = self.batch_size, self.key_dim, self.value_dim
        _check_tensor(fn, "keys", keys, f"({B}, T, {d})", 3)
        T = keys.shape[1]
        if keys.shape[0] != B or keys.shape[2] != d:
            raise ValueError(f"{fn}: keys must have shape ({B}, T, {d}); got {tuple(keys.shape)}")
        _check_tensor(fn, "values", values, f"({B}, {T}, {v})", 3)
        if tuple(values.shape) != (B, T, v):
            raise ValueError(f"{fn}: values must have shape ({B}, {T}, {v}); got {tuple(values.shape)}")
        _check_float(fn, "keys", keys, self._dtype, self._device)
        _check_float(fn, "values", values, self._dtype, self._device)
        if mask is not None:
            _check_tensor(fn, "mask", mask, f"({B}, {T}) bool", 2)
            if mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
                raise ValueError(f"{fn}: mask must be a bool tensor of shape ({B}, {T}); got {mask.dtype} {tuple(mask.shape)}")
            if mask.device != self._device:
                raise ValueError(f"{fn}: mask is on {mask.device}; expected {self._device}")

        with torch.no_grad():
            write = ~(keys.isnan().any(-1) | values.isnan().any(-1))
            if mask is not None:
                write &= mask
        if self.update_tolerance is None:
            slots = self._write_lru(keys, values, write)
        else:
            slots = self._write_tabular(keys, values, write)
        self._now += T
        return slots

    def _write_lru(self, keys: Tensor, values: Tensor, write: Tensor) -> Tensor:
        """All steps at once: the j-th written step of a dictionary goes to its j-th least recently
        used slot (j modulo capacity, so only the last `capacity` written steps survive)."""
        B, T = write.shape
        C = self.capacity
        with torch.no_grad():
            order = self._last_used.argsort(dim=-1, stable=True)  # empty (-1) first, then oldest
            rank = write.cumsum(-1) - 1  # j, for written steps
            survive = write & (rank >= write.sum(-1, keepdim=True) - C)
            slots = torch.where(survive, order.gather(1, rank.clamp(min=0) % C), -1)
            b, t = survive.nonzero(as_tuple=True)
        self._store(b, slots[b, t], keys[b, t], values[b, t], self._now + t)
        return slots

    def _write_tabular(self, keys: Tensor, values: Tensor, write: Tensor) -> Tensor:
        """One step at a time, each vectorised over the dictionaries that write it."""
        B, T = write.shape
        slots = torch.full((B, T), -1, dtype=torch.int64, device=self._device)
        limit = self.update_tolerance**2
        # unbind, not indexing per step: see seqlvm.kalman.params.per_step
        for t, (keys_t, values_t, write_t) in enumerate(zip(keys.unbind(1), values.unbind(1), write.unbind(1))):
            b = write_t.nonzero(as_tuple=True)[0]
            if b.numel() == 0:
                continue
            keys_t, values_t = keys_t[b], values_t[b]
            with torch.no_grad():
                d2 = torch.cdist(keys_t[:, None].detach(), self._keys[b].detach(), compute_mode=_EXACT)
                d2 = d2.squeeze(1).square_().masked_fill_(~self._occupied[b], math.inf)
                nearest_d2, nearest = d2.min(-1)
                match = nearest_d2 <= limit
                slot = torch.where(match, nearest, self._last_used[b].argmin(-1))
                # An earlier step of this call whose entry this step evicts is reported as -1.
                slots[b] = torch.where((slots[b] == slot[:, None]) & ~match[:, None], -1, slots[b])
                slots[b, t] = slot
            old = self._values[b, slot]
            value = torch.where(match[:, None], old + self.update_rate * (values_t - old), values_t)
            self._store(b, slot, keys_t, value, torch.full_like(b, self._now + t))
        return slots

    def _store(self, b: Tensor, slot: Tensor, keys: Tensor, values: Tensor, time: Tensor) -> None:
        """Put rows (n, d) / (n, v) into (dictionary b, slot) pairs (n,), which must be distinct.

        In place, so a write costs O(n) and the graph holds only the written rows; lookups gather
        with indexing, whose backward saves no storage, so earlier lookups stay differentiable."""
        self._keys.index_put_((b, slot), keys)
        self._values.index_put_((b, slot), values)
        self._occupied.index_put_((b, slot), torch.ones_like(b, dtype=torch.bool))
        self._last_used.index_put_((b, slot), time)

    def lookup(self, query: Tensor, k: int, *, refresh: bool = True) -> DNDLookup:
        """The k nearest entries of each query and their kernel weights (see :func:`dnd_lookup`).

        Args:
            query:   (B, Q, d) Q queries per dictionary, the store's dtype and device.
            k:       number of neighbours, 1 <= k <= capacity; dictionaries with fewer than k
                     entries return padding (weight 0, log-weight -inf, value 0, index -1), so
                     an empty dictionary returns padding only and its weights sum to 0.
            refresh: mark the returned entries as used now, for the LRU overwrite (as NEC does).

        Returns:
            :class:`DNDLookup`: weights, log_weights, indices (B, Q, k), values (B, Q, k, v).
        """
        fn = "DND.lookup"
        B, d = self.batch_size, self.key_dim
        _check_tensor(fn, "query", query, f"({B}, Q, {d})", 3)
        if query.shape[0] != B or query.shape[2] != d:
            raise ValueError(f"{fn}: query must have shape ({B}, Q, {d}); got {tuple(query.shape)}")
        _check_query(fn, query, self._dtype, self._device)
        k = _check_k(fn, k, self.capacity)
        result = _lookup(query, self._keys, self._values, k, self._occupied, self.delta)
        if refresh:
            used = result.indices.reshape(B, -1)
            # amax, so padding (aimed at slot 0 with time -1) never undoes a hit on slot 0.
            time = torch.where(used >= 0, self._now, -1)
            self._last_used.scatter_reduce_(1, used.clamp(min=0), time, reduce="amax")
            self._now += 1
        return result
