"""The whole training step as a CUDA graph: one replay per batch instead of hundreds of launches.

`TrainConfig.cuda_graph` turns it on. The trainer's batch body (`Trainer._batch`: negatives,
propagation, sampling and synthesis, the denoiser's own step, the losses, the backward pass and
both optimizers) is written without host synchronization: negatives are drawn on the device by a
pool in static mode, the mixing schedule's parameters sit in a device buffer set once per epoch,
the denoiser's time table has a fixed size. Each batch shape (the full batches, and the last,
shorter one) gets one static index buffer; on a GPU its first batches run eagerly on a side stream
(warm-up: lazy allocations, optimizer state), then the step is captured once and replayed from
then on, every tensor at the same address. The batch's loss parts are summed into one device
vector inside the step, so the epoch's averages need no extra launches.

On a CPU the same static body runs eagerly, batch by batch: its numbers equal the ordinary loop's
(tests/test_graphstep.py), which is how the graphed path is tested where no GPU is.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

WARMUP_BATCHES = 3  # eager batches on a side stream before the first capture (PyTorch's advice)


class _Shape:
    """One batch length: its static index buffer and, on a GPU, its graph."""

    def __init__(self, length: int, device: torch.device) -> None:
        self.idx = torch.zeros(length, dtype=torch.long, device=device)
        self.warm = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: dict[str, torch.Tensor] | None = None


class StaticSteps:
    """Runs `trainer._batch` with static shapes; counts replays and captures (bench reports them)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.device = trainer.device
        self.cuda = self.device.type == "cuda"
        self.shapes: dict[int, _Shape] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None
        self.keys: list[str] | None = None
        self.acc: torch.Tensor | None = None  # the epoch's sums of the loss parts, in `keys` order
        self.replays = self.captures = self.eager_batches = 0

    def start_epoch(self) -> None:
        if self.acc is not None:
            self.acc.zero_()

    def totals(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.keys or [], self.acc.unbind() if self.acc is not None else []))

    def run(self, idx: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """One batch of training on the rows `idx` of the training pairs; returns its loss parts
        (0-d device tensors, overwritten by the next batch of the same shape)."""
        shape = self.shapes.get(len(idx))
        if shape is None:
            shape = self.shapes[len(idx)] = _Shape(len(idx), self.device)
        shape.idx.copy_(idx)
        if not self.cuda:
            self.eager_batches += 1
            return self._body(shape.idx, epoch)
        if shape.graph is None:
            needed = WARMUP_BATCHES if self.captures == 0 else 1
            if shape.warm < needed:
                shape.warm += 1
                self.eager_batches += 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    out = self._body(shape.idx, epoch)
                torch.cuda.current_stream(self.device).wait_stream(side)
                return out
            shape.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(shape.graph, pool=self.pool):
                shape.out = self._body(shape.idx, epoch)  # recorded, not run: the replay below runs it
            self.captures += 1
        shape.graph.replay()
        self.replays += 1
        return shape.out

    def _body(self, idx: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        with _static_pool(self.trainer.pool), _no_phases(self.trainer) if self.cuda else nullcontext():
            parts = self.trainer._batch(idx, epoch)
        if self.keys is None:
            self.keys = list(parts)
            self.acc = torch.zeros(len(self.keys), device=self.device)
        self.acc.add_(torch.stack([parts[k] for k in self.keys]))
        return parts


@contextmanager
def _static_pool(pool):
    before = pool.static
    pool.static = True
    try:
        yield
    finally:
        pool.static = before


@contextmanager
def _no_phases(trainer):
    # per-phase timing synchronizes the device, which a captured step must not do; the bench times
    # the graphed step as one phase instead
    before = trainer.profile
    trainer.profile = False
    try:
        yield
    finally:
        trainer.profile = before
