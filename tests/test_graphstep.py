"""The static (graphable) training step, tested where no GPU is: on a CPU it runs eagerly and must
give the ordinary loop's numbers, draw valid negatives without a host sync, and read no device
value on the host inside the step (what a CUDA graph capture forbids)."""
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnsdiff_core import fastops
from cnsdiff_core.config import SAMPLERS, preset_config
from cnsdiff_core.samplers import NegativePool
from cnsdiff_core.train import Trainer


def _run(data, sampler, cuda_graph, **kw):
    settings = dict(epochs=2, batch_size=256, dim=32, probe_triples=64, patience=0, device="cpu", cpu_threads=1,
                    seed=3) | kw
    cfg = preset_config("tuned", sampler=sampler, cuda_graph=cuda_graph, **settings)
    trainer = Trainer(cfg, data)
    res = trainer.fit()
    return res, trainer


def _history(res):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in res.history]


@pytest.mark.parametrize("sampler", ["rns", "dns", "ahns", "cnsdiff"])
def test_the_static_step_gives_the_ordinary_loops_numbers(toy, sampler):
    eager, _ = _run(toy, sampler, False)
    static, trainer = _run(toy, sampler, True)
    # two batch shapes (full and the last one), each with its own static index buffer
    assert sorted(trainer.static_steps.shapes) == [len(toy.train) % 256, 256]
    assert _history(static) == _history(eager)  # loss parts summed in the step's device vector
    assert static.metrics == eager.metrics
    assert np.array_equal(static.item_emb, eager.item_emb)


def test_the_static_step_trains_every_sampler(toy):
    for sampler in SAMPLERS:  # PNS and MixGCF draw where collisions outlast three rounds: valid, not identical
        res, trainer = _run(toy, sampler, True, epochs=1)
        assert res.status == "finished" and np.isfinite(res.history[0]["loss"])
        assert trainer.static_steps.eager_batches == -(-len(toy.train) // 256)


def test_static_draws_are_valid_negatives_even_for_dense_users():
    rng = np.random.default_rng(0)
    pairs = np.array([(u, i) for u in range(20) for i in range(30) if rng.random() < (0.9 if u < 10 else 0.1)]
                     + [(20, i) for i in range(30)])  # user 20 trained on everything: any item
    pool = NegativePool(pairs, 21, 30, torch.device("cpu"))
    users = torch.arange(21).repeat(50)
    torch.manual_seed(0)
    items = pool.draw(users, 8, static=True)
    uu = users[:, None].expand(-1, 8)
    assert not (pool.is_positive(uu, items) & ~pool.saturated[uu]).any()
    for u in range(10):  # the rank map reaches exactly the items a dense user has not trained on
        unseen = set(range(30)) - set(pairs[pairs[:, 0] == u, 1].tolist())
        assert set(pool._unseen(torch.full((30,), u), torch.arange(30)).tolist()) == unseen


def test_static_and_exact_draws_agree_where_three_rounds_suffice(toy):
    pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"))
    users = torch.as_tensor(toy.train[:, 0])
    torch.manual_seed(1)
    static = pool.draw(users, 4, static=True)
    torch.manual_seed(1)
    exact = pool.draw(users, 4)
    assert torch.equal(static, exact)


SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique_consecutive", "_unique2", "bincount",
           "repeat_interleave"}


class _NoHostReads(TorchDispatchMode):
    """Fails on operators that make the host wait for a device value (or a data-dependent shape).
    Adam on a CPU reads its step count on the host; a graphed step on a GPU uses its capturable
    form, which does not, so reads from inside torch.optim are let through."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING or (name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))):
            if not any("torch/optim/" in f.filename for f in traceback.extract_stack()):
                raise AssertionError(f"host synchronization inside the step: aten::{name}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_step_reads_no_device_value_on_the_host(toy, sampler):
    """The GPU's code path (plain operators, batched synthesis) with a dispatch guard around the step."""
    cfg = preset_config("tuned", sampler=sampler, epochs=1, batch_size=256, dim=32, probe_triples=64, patience=0,
                        device="cpu", cpu_threads=1, seed=3, cuda_graph=True)
    trainer = Trainer(cfg, toy)
    trainer.setup()
    trainer.sampler.folded = False  # the batched synthesis a GPU runs
    trainer.sampler.set_epoch(0)
    idx = torch.randperm(len(toy.train))[:256]
    with fastops.plain():
        trainer.static_steps.run(idx, 0)  # first call: lazy state (optimizer moments) outside the guard
        with _NoHostReads():
            parts = trainer.static_steps.run(idx, 0)
    assert torch.isfinite(parts["loss"])
    with pytest.raises(AssertionError, match="host synchronization"):
        with _NoHostReads():
            trainer.pool.draw(torch.as_tensor(toy.train[:256, 0]), 1, static=False)  # the exact draw syncs
