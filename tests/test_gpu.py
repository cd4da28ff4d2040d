"""CUDA path: the same code on the GPU (run by scripts/gpu_check.sh; deselected elsewhere)."""
import numpy as np
import pytest
import torch

from cnsdiff_core.config import SAMPLERS, preset_config
from cnsdiff_core.metrics import embedding_scorer, evaluate
from cnsdiff_core.train import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_trains_on_cuda(toy, sampler):
    trainer = Trainer(preset_config("tuned", sampler=sampler, epochs=2, batch_size=256, dim=16,
                                    probe_triples=64, device="cuda"), toy)
    res = trainer.fit()
    assert trainer.model.user_emb.device.type == "cuda"
    assert res.status == "finished" and np.isfinite(res.metrics["ood_recall@20"])


def test_evaluation_agrees_between_cpu_and_cuda(toy):
    torch.manual_seed(0)
    u, i = torch.randn(toy.n_users, 16), torch.randn(toy.n_items, 16)
    cpu = evaluate(embedding_scorer(u, i), toy.train, toy.test_iid, toy.n_users, toy.n_items, "cpu")
    gpu = evaluate(embedding_scorer(u.cuda(), i.cuda()), toy.train, toy.test_iid, toy.n_users, toy.n_items, "cuda")
    for k, v in cpu.metrics.items():
        assert gpu.metrics[k] == pytest.approx(v, rel=1e-4, abs=1e-6)


def test_auto_device_picks_the_gpu(toy):
    t = Trainer(preset_config("demo", sampler="rns", epochs=1, dim=8, probe_triples=32), toy)
    assert t.device.type == "cuda"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_trains_with_the_graphed_step(toy, sampler):
    trainer = Trainer(preset_config("tuned", sampler=sampler, epochs=3, batch_size=256, dim=16,
                                    probe_triples=64, device="cuda", cuda_graph=True), toy)
    res = trainer.fit()
    steps = trainer.static_steps
    assert res.status == "finished" and np.isfinite(res.metrics["ood_recall@20"])
    # full batches: three warm-up batches, then one capture and replays; the last batch: its own graph
    assert steps.captures >= 1 and steps.replays > 0
    assert all(np.isfinite(r["loss"]) for r in res.history)


def test_the_static_step_never_synchronizes_on_cuda(toy):
    trainer = Trainer(preset_config("tuned", sampler="cnsdiff", epochs=1, batch_size=256, dim=16,
                                    probe_triples=64, device="cuda", cuda_graph=True), toy)
    trainer.setup()
    trainer.sampler.set_epoch(0)
    idx = torch.randperm(len(toy.train), device="cuda")[:256]
    trainer.static_steps.run(idx, 0)  # warm-up batch (lazy optimizer state)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        parts = trainer.static_steps.run(idx, 0)  # second warm-up batch, eager: any sync raises
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(parts["loss"]).item()
