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
