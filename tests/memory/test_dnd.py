"""The DND against brute-force references: a looped numpy lookup and a plain-Python dictionary
that follows the documented write/LRU/update rules step by step; plus gradcheck and bad input."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

import seqlvm.memory.dnd as dnd_module
from seqlvm.memory import DND, DNDLookup, dnd_lookup

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- references ------------------------------------------------------------------------------
def reference_lookup(query, keys, values, occupied, k, delta):
    """Loops over every entry, sorts by squared distance (ties in slot order), normalises the kernel."""
    query, keys, values, occupied = (np.asarray(a) for a in (query, keys, values, occupied))
    B, Q, _ = query.shape
    w = np.zeros((B, Q, k))
    lw = np.full((B, Q, k), -np.inf)
    vals = np.zeros((B, Q, k, values.shape[-1]))
    idx = np.full((B, Q, k), -1)
    for b in range(B):
        for q in range(Q):
            entries = [(float(np.sum((query[b, q] - keys[b, i]) ** 2)), i) for i in range(keys.shape[1]) if occupied[b, i]]
            nearest = sorted(entries)[:k]
            kern = np.array([1.0 / (d2 + delta) for d2, _ in nearest])
            for j, (_, i) in enumerate(nearest):
                w[b, q, j] = kern[j] / kern.sum()
                lw[b, q, j] = np.log(kern[j] / kern.sum())
                vals[b, q, j] = values[b, i]
                idx[b, q, j] = i
    return w, lw, vals, idx


class ReferenceDND:
    """The documented semantics, one step and one slot at a time."""

    def __init__(self, B, C, d, v, delta, tol=None, rate=0.1):
        self.keys, self.values = np.zeros((B, C, d)), np.zeros((B, C, v))
        self.occupied = np.zeros((B, C), dtype=bool)
        self.last_used = np.full((B, C), -1)
        self.now, self.delta, self.tol, self.rate = 0, delta, tol, rate

    def write(self, keys, values, mask):
        B, T = mask.shape
        slots = np.full((B, T), -1)
        for b in range(B):
            for t in range(T):
                if not mask[b, t] or np.isnan(keys[b, t]).any() or np.isnan(values[b, t]).any():
                    continue
                match = None
                if self.tol is not None:
                    stored = np.flatnonzero(self.occupied[b])
                    dist = [(np.linalg.norm(keys[b, t] - self.keys[b, i]), i) for i in stored]
                    if dist and min(dist)[0] <= self.tol:
                        match = min(dist)[1]
                if match is None:
                    slot = int(np.argmin(self.last_used[b]))  # first minimum: empty, else LRU, else lowest slot
                    slots[b][slots[b] == slot] = -1
                    self.values[b, slot] = values[b, t]
                else:
                    slot = match
                    self.values[b, slot] += self.rate * (values[b, t] - self.values[b, slot])
                self.keys[b, slot] = keys[b, t]
                self.occupied[b, slot] = True
                self.last_used[b, slot] = self.now + t
                slots[b, t] = slot
        self.now += T
        return slots

    def lookup(self, query, k, refresh):
        out = reference_lookup(query, self.keys, self.values, self.occupied, k, self.delta)
        if refresh:
            for b, q, j in zip(*np.nonzero(out[3] >= 0)):
                self.last_used[b, out[3][b, q, j]] = self.now
            self.now += 1
        return out


def _assert_lookup(result: DNDLookup, ref) -> None:
    w, lw, vals, idx = ref
    np.testing.assert_array_equal(result.indices.numpy(), idx)
    np.testing.assert_allclose(result.weights.detach().numpy(), w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.log_weights.detach().numpy(), lw, rtol=1e-10)
    np.testing.assert_allclose(result.values.detach().numpy(), vals, rtol=0, atol=0)


def _assert_state(dnd: DND, ref: ReferenceDND) -> None:
    np.testing.assert_array_equal(dnd.occupied.numpy(), ref.occupied)
    np.testing.assert_array_equal(dnd.last_used.numpy(), ref.last_used)
    np.testing.assert_allclose(dnd.keys.detach().numpy(), ref.keys, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dnd.values.detach().numpy(), ref.values, rtol=1e-12, atol=1e-15)


# -- lookup ------------------------------------------------------------------------------------
def test_lookup_matches_bruteforce_with_empty_slots_and_padding() -> None:
    g = _gen(0)
    B, N, Q, d, v, k = 3, 7, 4, 3, 2, 5
    query, keys, values = (torch.randn(*s, dtype=DT, generator=g) for s in ((B, Q, d), (B, N, d), (B, N, v)))
    occupied = torch.rand(B, N, generator=g) < 0.7
    occupied[1] = False
    occupied[1, [2, 5]] = True  # fewer entries than k: padding
    occupied[2] = False  # no entries: all padding
    result = dnd_lookup(query, keys, values, k, occupied=occupied, delta=1e-3)
    _assert_lookup(result, reference_lookup(query, keys, values, occupied, k, 1e-3))
    assert torch.allclose(result.weights.sum(-1), torch.tensor([1.0, 1.0, 0.0], dtype=DT)[:, None])
    expected_average = (result.weights[..., None] * result.values).sum(-2)
    assert torch.equal(result.average(), expected_average)
    full = dnd_lookup(query, keys, values, k)  # occupied=None: every slot holds an entry
    _assert_lookup(full, reference_lookup(query, keys, values, np.ones((B, N), bool), k, 1e-3))


def test_peaked_weights_stay_accurate_in_float32() -> None:
    keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    values = torch.zeros(1, 3, 1)
    query = torch.tensor([[[0.0, 0.0], [1e-3, 0.0]]])
    delta = 1e-12
    result = dnd_lookup(query, keys, values, 3, delta=delta)
    ref = reference_lookup(query.double(), keys.double(), values, np.ones((1, 3), bool), 3, delta)
    assert torch.isfinite(result.log_weights).all()
    np.testing.assert_allclose(result.log_weights.numpy(), ref[1], rtol=1e-6, atol=1e-6)
    assert result.weights[0, 0, 0] == 1.0 and result.weights[0, 0, 1] > 0  # not underflowed to a hard 0


# -- the stateful dictionary against the step-by-step reference -------------------------------------
@pytest.mark.parametrize("tabular", [False, True])
def test_random_operations_match_reference(tabular: bool) -> None:
    g = _gen(1)
    B, C, d, v, k = 3, 5, 2, 2, 3
    tol = 0.1 if tabular else None
    dnd = DND(B, C, d, v, delta=1e-2, update_tolerance=tol, update_rate=0.3, dtype=DT)
    ref = ReferenceDND(B, C, d, v, 1e-2, tol, 0.3)
    for step in range(12):
        T = int(torch.randint(1, 8, (), generator=g))
        if tabular:  # lattice points plus jitter: revisits fall within tolerance, others are >= 1 apart
            keys = torch.randint(0, 3, (B, T, d), generator=g).to(DT) + 0.01 * torch.rand(B, T, d, dtype=DT, generator=g)
        else:
            keys = torch.randn(B, T, d, dtype=DT, generator=g)
        values = torch.randn(B, T, v, dtype=DT, generator=g)
        mask = torch.rand(B, T, generator=g) < 0.8
        if step == 3:
            keys[0, 0, 1] = float("nan")  # NaN means missing: never written
        np.testing.assert_array_equal(dnd.write(keys, values, mask).numpy(), ref.write(keys.numpy(), values.numpy(), mask.numpy()))
        _assert_state(dnd, ref)
        query = 1.5 * torch.randn(B, 2, d, dtype=DT, generator=g)
        refresh = step % 3 != 0
        _assert_lookup(dnd.lookup(query, k, refresh=refresh), ref.lookup(query.numpy(), k, refresh))
        _assert_state(dnd, ref)


def test_write_fills_in_order_then_evicts_least_recently_used() -> None:
    dnd = DND(1, 3, 1, 1, dtype=DT)
    one = lambda x: torch.tensor([[[x]]], dtype=DT)  # noqa: E731
    for x in (0.0, 10.0, 20.0):
        dnd.write(one(x), one(x))
    assert dnd.keys.flatten().tolist() == [0.0, 10.0, 20.0]
    dnd.lookup(one(0.1), k=1)  # refreshes the entry 0.0 (NEC: retrieval counts as use)
    assert dnd.write(one(30.0), one(30.0)).item() == 1  # evicts 10.0, the least recently used
    assert dnd.keys.flatten().tolist() == [0.0, 30.0, 20.0]
    dnd.lookup(one(20.1), k=1, refresh=False)  # without refresh, 20.0 stays the least recently used
    assert dnd.write(one(40.0), one(40.0)).item() == 2
    assert dnd.keys.flatten().tolist() == [0.0, 30.0, 40.0]


def test_one_write_longer_than_capacity_keeps_the_last_steps() -> None:
    dnd = DND(2, 3, 1, 1, dtype=DT)
    x = torch.arange(10, dtype=DT).reshape(2, 5, 1)
    mask = torch.tensor([[True] * 5, [True, False, True, False, True]])
    slots = dnd.write(x, 2 * x, mask)
    assert slots.tolist() == [[-1, -1, 2, 0, 1], [0, -1, 1, -1, 2]]
    assert dnd.keys[..., 0].tolist() == [[3.0, 4.0, 2.0], [5.0, 7.0, 9.0]]
    assert dnd.sizes.tolist() == [3, 3]


def test_tabular_update_changes_an_existing_entry_in_place() -> None:
    dnd = DND(1, 4, 2, 1, update_tolerance=0.05, update_rate=0.1, dtype=DT)
    dnd.write(torch.tensor([[[0.0, 0.0], [1.0, 1.0]]], dtype=DT), torch.tensor([[[1.0], [5.0]]], dtype=DT))
    slots = dnd.write(torch.tensor([[[0.03, 0.0], [0.06, 0.0]]], dtype=DT), torch.tensor([[[3.0], [7.0]]], dtype=DT))
    # 0.03 is within tolerance of (0, 0): that entry becomes (0.03, 0) with 1 + 0.1 (3 - 1) = 1.2.
    # 0.06 is then 0.03 from the updated key, so it updates the same entry again.
    assert slots.tolist() == [[0, 0]]
    assert dnd.sizes.item() == 2
    assert dnd.keys[0, 0].tolist() == [0.06, 0.0]
    assert dnd.values[0, 0].item() == pytest.approx(1.2 + 0.1 * (7.0 - 1.2))
    assert dnd.write(torch.tensor([[[0.2, 0.0]]], dtype=DT), torch.ones(1, 1, 1, dtype=DT)).item() == 2  # beyond tolerance: added


def test_tabular_path_equals_lru_path_when_nothing_matches() -> None:
    g = _gen(2)
    keys, values = torch.randn(2, 9, 3, dtype=DT, generator=g), torch.randn(2, 9, 2, dtype=DT, generator=g)
    mask = torch.rand(2, 9, generator=g) < 0.7
    plain, tabular = DND(2, 4, 3, 2, dtype=DT), DND(2, 4, 3, 2, update_tolerance=0.0, dtype=DT)
    assert torch.equal(plain.write(keys, values, mask), tabular.write(keys, values, mask))
    for name in ("keys", "values", "occupied", "last_used"):
        assert torch.equal(getattr(plain, name), getattr(tabular, name)), name


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tabular", [False, True])
def test_gradcheck_query_keys_values(tabular: bool) -> None:
    g = _gen(3)
    B, T, Q, d, v = 2, 5, 3, 2, 2
    query = torch.randn(B, Q, d, dtype=DT, generator=g).requires_grad_()
    keys = 2 * torch.randn(B, T, d, dtype=DT, generator=g)
    keys[:, 3] = keys[:, 0] + 0.01  # a revisit: updates entry 0 when tabular
    keys.requires_grad_()
    values = torch.randn(B, T, v, dtype=DT, generator=g).requires_grad_()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 1:] = False  # dictionary 1 holds one entry: k = 3 pads it

    def run(q, kk, vv):
        dnd = DND(B, 4, d, v, delta=0.1, update_tolerance=0.05 if tabular else None, dtype=DT)
        dnd.write(kk, vv, mask)  # 5 steps into 4 slots: the first is evicted when not tabular
        out = dnd.lookup(q, k=3)
        return out.weights, out.log_weights.masked_fill(out.indices < 0, 0.0), out.values, out.average()

    assert gradcheck(run, (query, keys, values), eps=1e-6, atol=1e-6)


def test_gradients_reach_earlier_lookups_after_later_writes_and_padding_is_finite() -> None:
    g = _gen(4)
    keys = torch.randn(2, 3, 2, dtype=DT, generator=g).requires_grad_()
    values = torch.randn(2, 3, 1, dtype=DT, generator=g).requires_grad_()
    query = torch.randn(2, 2, 2, dtype=DT, generator=g).requires_grad_()
    dnd = DND(2, 3, 2, 1, dtype=DT)
    mask = torch.tensor([[True, True, True], [False, False, False]])  # dictionary 1 stays empty
    dnd.write(keys, values, mask)
    out = dnd.lookup(query, k=3)
    dnd.write(torch.zeros(2, 2, 2, dtype=DT), torch.zeros(2, 2, 1, dtype=DT))  # overwrites slots in place
    (out.average().sum() + out.weights.sum()).backward()
    for leaf in (keys, values, query):
        assert torch.isfinite(leaf.grad).all()
    assert keys.grad[0].abs().sum() > 0 and values.grad[0].abs().sum() > 0 and query.grad[0].abs().sum() > 0
    assert not keys.grad[1].any() and not query.grad[1].any()
    assert dnd.keys.requires_grad
    assert not dnd.detach_().keys.requires_grad and torch.equal(dnd.keys[0, 2], keys[0, 2].detach())


# -- batches, determinism, state management ------------------------------------------------------
def test_batch_elements_are_independent_and_results_deterministic() -> None:
    g = _gen(5)
    B, T, d, v = 3, 6, 2, 3
    keys, values = torch.randn(B, T, d, dtype=DT, generator=g), torch.randn(B, T, v, dtype=DT, generator=g)
    mask, query = torch.rand(B, T, generator=g) < 0.6, torch.randn(B, 4, d, dtype=DT, generator=g)

    def run(sl: slice):
        dnd = DND(sl.stop - sl.start, 4, d, v, update_tolerance=0.5, dtype=DT)
        slots = dnd.write(keys[sl], values[sl], mask[sl])
        return slots, dnd.lookup(query[sl], k=3), dnd.last_used

    whole = run(slice(0, B))
    again = run(slice(0, B))
    assert torch.equal(whole[0], again[0]) and torch.equal(whole[2], again[2])
    assert all(torch.equal(a, b) for a, b in zip(whole[1], again[1]))
    for b in range(B):
        single = run(slice(b, b + 1))
        assert torch.equal(single[0], whole[0][b : b + 1]) and torch.equal(single[2], whole[2][b : b + 1])
        assert all(torch.equal(s, w[b : b + 1]) for s, w in zip(single[1], whole[1]))


def test_clear_empties_selected_dictionaries() -> None:
    dnd = DND(3, 2, 1, 1, dtype=DT)
    dnd.write(torch.ones(3, 2, 1, dtype=DT), torch.ones(3, 2, 1, dtype=DT, requires_grad=True))
    dnd.clear(torch.tensor([True, False, True]))
    assert dnd.sizes.tolist() == [0, 2, 0]
    assert dnd.last_used[0].tolist() == [-1, -1] and not dnd.keys[0].any() and dnd.values[1].all()
    assert dnd.lookup(torch.zeros(3, 1, 1, dtype=DT), k=2).indices[:, 0].tolist() == [[-1, -1], [0, 1], [-1, -1]]
    dnd.clear()
    assert dnd.sizes.tolist() == [0, 0, 0] and not dnd.keys.requires_grad


def test_dtype_and_device_follow_the_store() -> None:
    dnd = DND(1, 2, 1, 1)
    assert dnd.dtype == torch.get_default_dtype() and dnd.device == torch.device("cpu")
    with pytest.raises(ValueError, match="query has dtype torch.float64; expected torch.float32"):
        dnd.lookup(torch.zeros(1, 1, 1, dtype=DT), k=1)
    dnd.write(torch.ones(1, 1, 1), torch.ones(1, 1, 1))
    dnd.to(dtype=DT)
    assert dnd.keys.dtype == DT and dnd.lookup(torch.zeros(1, 1, 1, dtype=DT), k=2).weights.dtype == DT
    assert "capacity=2" in repr(dnd)


# -- bad input ---------------------------------------------------------------------------------
def _store() -> DND:
    return DND(2, 4, 3, 2, dtype=DT)


def _z(*shape: int, dtype: torch.dtype = DT) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype)


def _write(keys, values, mask=None):
    return lambda: _store().write(keys, values, mask)


def _lookup(query, k=1):
    return lambda: _store().lookup(query, k)


F32 = torch.float32
BOOL = torch.bool
BAD = [
    (_write(_z(2, 3), _z(2, 3, 2)), "keys must have shape (2, T, 3); got (2, 3)"),
    (_write(_z(2, 5, 4), _z(2, 5, 2)), "keys must have shape (2, T, 3); got (2, 5, 4)"),
    (_write(_z(3, 5, 3), _z(3, 5, 2)), "keys must have shape (2, T, 3); got (3, 5, 3)"),
    (_write(_z(2, 5, 3), _z(2, 4, 2)), "values must have shape (2, 5, 2); got (2, 4, 2)"),
    (_write(_z(2, 5, 3, dtype=F32), _z(2, 5, 2, dtype=F32)), "keys has dtype torch.float32; expected torch.float64"),
    (_write(_z(2, 5, 3), _z(2, 5, 2, dtype=F32)), "values has dtype torch.float32; expected torch.float64"),
    (_write(_z(2, 5, 3), _z(2, 5, 2), torch.ones(2, 5)), "mask must be a bool tensor of shape (2, 5); got torch.float32 (2, 5)"),
    (_write(_z(2, 5, 3), _z(2, 5, 2), _z(2, 4, dtype=BOOL)), "mask must be a bool tensor of shape (2, 5); got torch.bool (2, 4)"),
    (_lookup(_z(2, 3)), "query must have shape (2, Q, 3); got (2, 3)"),
    (_lookup(_z(2, 1, 2)), "query must have shape (2, Q, 3); got (2, 1, 2)"),
    (_lookup(_z(2, 1, 3), k=0), "k must be between 1 and the number of slots 4; got 0"),
    (_lookup(_z(2, 1, 3), k=5), "k must be between 1 and the number of slots 4; got 5"),
    (_lookup(torch.full((2, 1, 3), math.nan, dtype=torch.float64)), "query must be finite; got 6 non-finite entries"),
    (lambda: dnd_lookup(torch.full((2, 1, 3), math.inf), _z(2, 4, 3, dtype=F32), _z(2, 4, 2, dtype=F32), 1),
     "query must be finite; got 6 non-finite entries"),
    (lambda: _store().clear(_z(3, dtype=BOOL)), "batch_mask must be a bool tensor of shape (2,); got torch.bool (3,)"),
    (lambda: dnd_lookup(_z(2, 1, 3), _z(2, 4, 3, dtype=F32), _z(2, 4, 2), 1), "query has dtype torch.float64; expected torch.float32"),
    (lambda: dnd_lookup(_z(2, 1, 3), _z(2, 4, 3), _z(2, 5, 2), 1), "values must have shape (2, 4, v) to match keys; got (2, 5, 2)"),
    (lambda: dnd_lookup(_z(2, 1, 3), _z(2, 4, 3), _z(2, 4, 2), 1, occupied=_z(2, 4)), "occupied must be a bool tensor of shape (2, 4)"),
    (lambda: dnd_lookup(_z(2, 1, 3), _z(2, 4, 3), _z(2, 4, 2), 1, delta=0.0), "delta must be a finite number > 0; got 0.0"),
    (lambda: DND(0, 4, 3, 2), "batch_size must be an int >= 1; got 0"),
    (lambda: DND(2, 4, 3, 2, update_tolerance=-1.0), "update_tolerance must be None or a finite number >= 0; got -1.0"),
    (lambda: DND(2, 4, 3, 2, update_rate=0.0), "update_rate must be a number in (0, 1]; got 0.0"),
    (lambda: DND(2, 4, 3, 2, dtype=torch.int64), "dtype must be torch.float32 or torch.float64; got torch.int64"),
    (lambda: DND(2, 4, 3, 2, dtype=torch.float16), "dtype must be torch.float32 or torch.float64; got torch.float16"),
    (lambda: DND(2, 4, 3, 2).to(dtype=torch.bfloat16), "dtype must be torch.float32 or torch.float64; got torch.bfloat16"),
]


@pytest.mark.parametrize("call, message", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_a_device_without_an_index_is_its_tensors_device() -> None:
    """torch.device("cuda") != torch.device("cuda:0"), the device of what it allocates; "cpu:0" and
    "cpu" differ the same way, so the CPU stands in for the GPU here."""
    dnd = DND(1, 4, 2, 1, device="cpu:0", dtype=torch.float64)
    assert dnd.device == dnd.keys.device
    dnd.write(torch.ones(1, 1, 2, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64))
    assert dnd.lookup(torch.zeros(1, 1, 2, dtype=torch.float64), k=1).weights.item() == 1.0


@pytest.mark.parametrize("call", [_lookup(_z(2, 1, 3), k=2.0), _write([[0.0]], _z(2, 1, 2))])
def test_wrong_types_raise_type_error(call) -> None:
    with pytest.raises(TypeError, match="must be"):
        call()


# -- documentation and layering ---------------------------------------------------------------------
def test_module_docstring_example_runs() -> None:
    example = re.search(r"::\n\n(.*?)\n\n", dnd_module.__doc__, re.S).group(1)
    exec(compile(example.replace("\n    ", "\n").strip(), "seqlvm/memory/dnd.py", "exec"), {})


def test_memory_imports_nothing_above_it() -> None:
    for path in Path(dnd_module.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.startswith("seqlvm.") and not n.startswith("seqlvm.memory") for n in names), (path, names)
