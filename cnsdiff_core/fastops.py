"""Dense products of the training step on the fastest kernel torch offers for them on a CPU.

torch's CPU matmul goes to MKL, which on this project's AMD machines runs at about half the speed
of oneDNN (the library behind torch.ops.mkldnn, shipped in the same wheel): 2048 x 64 x 64 takes
0.17 ms against 0.08 ms with one thread. Where the inner (summed) dimension is short (the
embedding and hidden widths, 64; up to MAX_INNER) and there are at least MIN_ROWS rows, oneDNN
returns bit for bit what MKL returns, bias and an added tensor included. Longer sums (a weight's
gradient sums over the batch) are taken in another order by oneDNN, so those products stay on MKL,
in the very form autograd uses: gradients through `linear` are autograd's, bit for bit, and a
fixed-seed run gives the plain path's numbers (tests/test_fastops.py, tests/test_golden.py). tests/test_fastops.py pins both.

Every function falls back to the plain torch expression when oneDNN is not there, off the CPU
(the GPU has its own kernels), for dtypes other than float32, and inside `plain()`, which the
tests use to compare a whole training run against the plain path.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F

_state = threading.local()


def _probe() -> bool:
    # looked up, not run: a oneDNN call at import time, before a trainer sets its thread count,
    # leaves an OpenMP team of the default size behind, which slowed every later epoch by ~15%
    # on this 2-core machine (tests/test_fastops.py runs the products)
    try:
        torch.ops.mkldnn._linear_pointwise.default
        torch.ops.mkldnn._linear_pointwise.binary
    except (AttributeError, RuntimeError):
        return False
    return bool(torch.backends.mkldnn.is_available())


AVAILABLE = _probe()


def enabled() -> bool:
    """True unless inside `plain()` (or oneDNN is missing)."""
    return AVAILABLE and not getattr(_state, "plain", False)


@contextmanager
def plain():
    """Run the plain torch expressions in this thread (the reference the fast path is tested against)."""
    before = getattr(_state, "plain", False)
    _state.plain = True
    try:
        yield
    finally:
        _state.plain = before


MIN_ROWS = 16  # below this MKL takes another path for small products, which oneDNN does not match bit for bit
MAX_INNER = 128  # longest summed dimension checked to match MKL bit for bit


def _fast(*tensors: torch.Tensor | None) -> bool:
    if not enabled():
        return False
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() <= 2 and not t.is_sparse)
               for t in tensors)


def _dense(t: torch.Tensor) -> torch.Tensor:
    # oneDNN takes row-major and column-major blocks as they are, but falls back to a reference
    # kernel (1000x slower) for other strides, e.g. a column slice of a weight
    return t if t.is_contiguous() or t.T.is_contiguous() else t.contiguous()


def _lp(x, w, b=None):
    return torch.ops.mkldnn._linear_pointwise(_dense(x), _dense(w), b, "none", [], "")


def _lp_add(x, w, other):
    return torch.ops.mkldnn._linear_pointwise.binary(_dense(x), other.contiguous(), _dense(w), None, "add")


def _short(a: torch.Tensor, inner: int) -> bool:
    return a.shape[0] >= MIN_ROWS and inner <= MAX_INNER


class _Linear(torch.autograd.Function):
    """x @ w.T (+ b) (x: (M, K), w: (N, K), b: (N,)), the forward product on oneDNN; the backward
    is autograd's for F.linear: grad_x = g @ w (on oneDNN when N is short), grad_w = g.T @ x
    (MKL: a sum over the M rows), grad_b = g summed over rows."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _lp(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        g = g.contiguous()
        if ctx.needs_input_grad[0]:
            gx = _lp(g, w.T) if _short(g, g.shape[1]) else g.mm(w)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            gw = g.t().mm(x)  # (N, M) @ (M, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) = x @ w.T + b for 2-D x, on oneDNN where it is faster (autograd included)."""
    if not _fast(x, w, b) or x.dim() != 2 or not _short(x, x.shape[1]):
        return F.linear(x, w, b)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
        return _Linear.apply(x, w, b)
    return _lp(x, w, b)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-D tensors (autograd included)."""
    if not _fast(a, b) or a.dim() != 2 or b.dim() != 2 or not _short(a, a.shape[1]):
        return a @ b
    return linear(a, b.T)


@torch.no_grad()
def addmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: float = 1.0, alpha: float = 1.0,
          b_scaled_t: torch.Tensor | None = None) -> torch.Tensor:
    """torch.addmm(c, a, b, beta=beta, alpha=alpha) without autograd, bit for bit as MKL computes it
    (MKL scales b by alpha, then adds beta * c). b_scaled_t: (alpha * b).T computed once by the caller."""
    if not _fast(c, a, b) or c.shape != (a.shape[0], b.shape[1]) or not _short(a, a.shape[1]):
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)
    if b_scaled_t is None:
        b_scaled_t = (b * alpha).T if alpha != 1.0 else b.T
    return _lp_add(a, b_scaled_t, c * beta if beta != 1.0 else c)


_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates and frees the same few-MB tensors every batch. By default glibc
    returns the freed top of its heap to the kernel once more than twice its (adaptive) mmap
    threshold is free, and serves blocks above that threshold with fresh mmaps: every batch then
    faults its pages in again (15-20% of an RNS epoch on this 2-core machine, paired
    measurement). Blocks up to 32 MB from the heap and no trimming keep the process at its peak
    resident size instead. Process-wide, once; a no-op where the C library is not glibc. The
    numbers a run computes do not change."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    _MALLOC_TUNED = ok
    return ok

