"""The CPU fast paths of the training step against the plain expressions they replace: values and
gradients bit for bit, and a fixed-seed run with and without them identical (what keeps
tests/test_golden.py's numbers where they were recorded)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnsdiff_core import fastops
from cnsdiff_core.config import preset_config
from cnsdiff_core.samplers import BatchContext, make_sampler
from cnsdiff_core.train import Trainer

def test_fast_products_are_available_here_and_plain_switches_them_off():
    assert fastops.AVAILABLE  # the CPU wheel ships oneDNN; without it every function is the plain one
    assert fastops.enabled()
    with fastops.plain():
        assert not fastops.enabled()
        with fastops.plain():
            pass
        assert not fastops.enabled()  # nesting restores the outer state
    assert fastops.enabled()


@pytest.mark.parametrize("rows", [16, 300, 2048])
def test_linear_and_mm_equal_torch_with_gradients(rows):
    torch.manual_seed(rows)
    x = torch.randn(rows, 64, requires_grad=True)
    big = torch.randn(48, 200, requires_grad=True)
    w = big[:, 10:74]  # a column slice: strides oneDNN would run on a reference kernel
    b = torch.randn(48, requires_grad=True)
    y = fastops.linear(x, w, b)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, big, b), g)
    ref_y = F.linear(x, w, b)
    ref = torch.autograd.grad(ref_y, (x, big, b), g)
    assert torch.equal(y, ref_y)
    for a, r in zip(got, ref):  # autograd's gradients, bit for bit
        assert torch.equal(a, r)
    m = torch.randn(64, 30)
    assert torch.equal(fastops.mm(x.detach(), m), x.detach() @ m)
    # a long sum (over the rows) stays on MKL: oneDNN would take it in another order
    assert torch.equal(fastops.mm(x.detach().T, x.detach()), x.detach().T @ x.detach())


def test_addmm_equals_torch_addmm_scaling_and_small_batches():
    torch.manual_seed(0)
    for rows in (5, 2048):  # 5: below MIN_ROWS, the plain call
        c, a, b = torch.randn(rows, 64), torch.rand(rows, 64), torch.randn(64, 64)
        got = fastops.addmm(c, a, b, beta=0.81, alpha=0.37)
        assert torch.equal(got, torch.addmm(c, a, b, beta=0.81, alpha=0.37))


@pytest.mark.parametrize("extra", [{}, {"condition_on_user": True}, {"reverse_from_T": True},
                                   {"posterior_noise": True}])
def test_candidates_with_fast_products_equal_the_plain_fold(extra):
    cfg = preset_config("tuned", sampler="cnsdiff", **extra)
    s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
    torch.manual_seed(0)
    pos, user = torch.randn(300, 64), torch.randn(300, 64)
    torch.manual_seed(1)
    fast = s.candidates(pos, user)
    with fastops.plain():
        torch.manual_seed(1)
        plain = s.candidates(pos, user)
    assert torch.equal(fast, plain)


@pytest.mark.parametrize("temperature", [2.0, 0.2, 0.005])
def test_contrastive_term_equals_autograd_through_the_plain_expression(temperature):
    from cnsdiff_core.samplers.cnsdiff import contrastive_loss

    torch.manual_seed(0)
    anchor = torch.randn(300, 64, requires_grad=True)
    negs = torch.randn(100, 64, requires_grad=True)

    def run():
        torch.manual_seed(5)
        loss = contrastive_loss(anchor, negs, temperature)
        return (loss.detach(),) + torch.autograd.grad(loss, (anchor, negs))

    fast = run()
    with fastops.plain():
        plain = run()
    for a, b in zip(fast, plain):  # value and both gradients, bit for bit
        assert torch.equal(a, b)
    loss = contrastive_loss(anchor, negs, temperature)
    if temperature > 1 / 80:  # the in-place backward (logits that cannot overflow)
        loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="runs once per forward"):
            loss.backward()


@pytest.mark.parametrize("extra", [{}, {"causal": "kl", "causal_weight": 0.5}, {"causal": "none"},
                                   {"condition_on_user": True}, {"denoiser_dropout": 0.0}])
def test_denoiser_update_with_fast_products_equals_the_plain_one(extra):
    """The same loss parts and the same gradients, bit for bit (the forward products on oneDNN,
    the weight gradients as autograd takes them)."""
    cfg = preset_config("tuned", sampler="cnsdiff", **extra)
    s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
    torch.manual_seed(0)
    pos, user = torch.randn(500, 64), torch.randn(500, 64)
    env = torch.randint(0, 3, (500,))  # one of the four environments absent
    ctx = BatchContext(None, None, None, user, pos, None, None, 0, 0, None, env)
    start = copy.deepcopy(s.denoiser.state_dict())

    def grads():
        s.denoiser.load_state_dict(start)
        s.trainer.optimizer.step = lambda: None  # look at the gradients the step would use
        torch.manual_seed(3)
        parts = s.update(ctx)
        return parts, {n: p.grad.clone() for n, p in s.denoiser.named_parameters()}

    fast_parts, fast = grads()
    with fastops.plain():
        plain_parts, plain = grads()
    assert fast_parts.keys() == plain_parts.keys()
    for k in plain_parts:
        assert torch.equal(fast_parts[k], plain_parts[k]), k
    for name in plain:
        assert torch.equal(fast[name], plain[name]), name


def test_mixing_weights_are_torch_beta_draws():
    cfg = preset_config("tuned", sampler="cnsdiff", mix_a0=1.5, mix_b0=3.0, min_mix=0.05)
    s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
    torch.manual_seed(7)
    got = s.mix_weights(2048, 0, "cpu")
    torch.manual_seed(7)
    want = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(3.0)).sample((2048,)).clamp(min=0.05)
    assert torch.equal(got, want)


def _short_run(data, **kw):
    cfg = preset_config("tuned", sampler="cnsdiff", epochs=2, batch_size=256, dim=64, probe_triples=64,
                        patience=0, device="cpu", cpu_threads=1, seed=3, **kw)
    res = Trainer(cfg, data).fit()
    hist = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in res.history]
    return res, hist


@pytest.mark.parametrize("extra", [{}, {"causal": "kl"}])
def test_a_fixed_seed_run_is_the_same_with_and_without_the_fast_paths(toy, extra):
    fast, fast_hist = _short_run(toy, **extra)
    with fastops.plain():
        plain, plain_hist = _short_run(toy, **extra)
    assert fast.metrics == plain.metrics
    assert fast_hist == plain_hist
    assert np.array_equal(fast.item_emb, plain.item_emb) and np.array_equal(fast.user_emb, plain.user_emb)


def test_the_denoiser_step_can_run_before_the_recommenders(toy):
    """The trainer runs the sampler's denoiser update right after sampling; it reads only the
    batch's detached embeddings and draws after the sampler, so it gives what it gave after the
    recommender's step."""
    from cnsdiff_core.model import LightGCN, bpr_loss, normalized_adjacency
    from cnsdiff_core.samplers import NegativePool

    def one_batch(update_first: bool):
        torch.manual_seed(0)
        cfg = preset_config("tuned", sampler="cnsdiff", dim=32)
        model = LightGCN(toy.n_users, toy.n_items, 32, 2)
        model.set_graph(normalized_adjacency(toy.train, toy.n_users, toy.n_items))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
        pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"))
        tr = torch.as_tensor(toy.train[:200])
        users, pos = tr[:, 0], tr[:, 1]
        u, i = model.propagate()
        ctx = BatchContext(users, pos, pool.draw(users, 1)[:, 0], u[users], i[pos], i, None, toy.n_users, 3,
                           pool, torch.zeros(200, dtype=torch.long))
        nb = s.sample(ctx)
        if update_first:
            s.update(ctx)
        loss = bpr_loss((ctx.user_e * ctx.pos_e).sum(-1), (ctx.user_e * nb.emb).sum(-1)) + nb.extra_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_backward()
        if not update_first:
            s.update(ctx)
        return [p.detach().clone() for p in list(model.parameters()) + list(s.denoiser.parameters())]

    for a, b in zip(one_batch(True), one_batch(False)):
        assert torch.equal(a, b)
