"""One contract over every sampler, plus the properties each sampler promises."""
import numpy as np
import pytest
import torch

from cnsdiff_core.config import SAMPLERS, TrainConfig, preset_config
from cnsdiff_core.model import LightGCN, normalized_adjacency
from cnsdiff_core.samplers import BatchContext, NegativePool, make_sampler
from cnsdiff_core.samplers.cnsdiff import pick_hardest


def _ctx(data, sampler_needs_layers=True, B=64, seed=0):
    torch.manual_seed(seed)
    model = LightGCN(data.n_users, data.n_items, 16, 2)
    model.set_graph(normalized_adjacency(data.train, data.n_users, data.n_items))
    pool = NegativePool(data.train, data.n_users, data.n_items, torch.device("cpu"), data.item_popularity())
    idx = torch.arange(B)
    tr = torch.as_tensor(data.train)
    users, pos = tr[idx, 0], tr[idx, 1]
    u, i, layers = model.propagate(keep_layers=True)
    ctx = BatchContext(users, pos, pool.draw(users, 1)[:, 0], u[users], i[pos], i, layers,
                       data.n_users, 5, pool, torch.zeros(B, dtype=torch.long))
    return ctx, pool


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_contract(toy, name):
    cfg = TrainConfig(sampler=name, dim=16)
    ctx, pool = _ctx(toy)
    s = make_sampler(name, cfg, torch.device("cpu"))
    nb = s.sample(ctx)
    B = len(ctx.users)
    assert nb.emb.shape == (B, 16) and torch.isfinite(nb.emb).all()
    assert nb.reg_items.shape == (B,)
    if nb.items is not None:
        assert not pool.is_positive(ctx.users, nb.items).any(), "a training positive was used as negative"
        assert torch.allclose(nb.emb, ctx.items_e[nb.items])
    else:
        assert s.synthesizes and nb.synthesized is not None
    # the BPR loss must be differentiable wrt the user embeddings through every sampler
    loss = ((ctx.user_e * nb.emb).sum(-1) - (ctx.user_e * ctx.pos_e).sum(-1)).mean()
    loss.backward()


def test_pool_never_returns_training_items(toy):
    pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"))
    users = torch.as_tensor(toy.train[:500, 0])
    items = pool.draw(users, 20)
    assert items.shape == (500, 20)
    assert not pool.is_positive(users.unsqueeze(1).expand(-1, 20), items).any()
    known = torch.as_tensor(toy.train[:50])
    assert pool.is_positive(known[:, 0], known[:, 1]).all()


def _draw_checking_every_pair(pool, users, m, power=None, generator=None):
    """The pool's draw as first written (every pair checked again each round), kept here as the
    reference the CPU draw must reproduce item for item."""
    B = users.shape[0]
    uu = users.view(B, 1).expand(B, m)
    items = pool._raw(B * m, power, generator).view(B, m)
    for _ in range(3):
        bad = pool.is_positive(uu, items) & ~pool.saturated[uu]
        items = torch.where(bad, pool._raw(B * m, power, generator).view(B, m), items)
    for _ in range(50):
        bad = pool.is_positive(uu, items) & ~pool.saturated[uu]
        if int(bad.sum()) == 0:
            break
        items[bad] = pool._raw(int(bad.sum()), power, generator)
    return items


@pytest.mark.parametrize("power", [None, 0.75])
def test_cpu_draw_rechecking_only_redrawn_pairs_gives_the_same_items(power):
    """A dense world (each user trained on 30-70% of the items, one on all of them) makes every
    round and the exact rejection loop run; the CPU draw must return the reference's items from
    the same random numbers and leave the generator where the reference leaves it."""
    rng = np.random.default_rng(0)
    n_users, n_items = 12, 40
    rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, int(n_items * rng.uniform(0.3, 0.7)), replace=False)]
    rows += [(0, i) for i in range(n_items)]  # user 0: saturated
    pairs = np.unique(np.array(rows, dtype=np.int64), axis=0)
    pool = NegativePool(pairs, n_users, n_items, torch.device("cpu"), rng.integers(1, 50, n_items))
    users = torch.as_tensor(rng.integers(0, n_users, 300))
    got_gen, ref_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    got = pool.draw(users, 16, power=power, generator=got_gen)
    ref = _draw_checking_every_pair(pool, users, 16, power, ref_gen)
    assert torch.equal(got, ref)
    live = users != 0
    assert not pool.is_positive(users[live].unsqueeze(1).expand(-1, 16), got[live]).any()
    assert torch.equal(torch.rand(3, generator=got_gen), torch.rand(3, generator=ref_gen))


def test_pns_prefers_popular_items(toy):
    pop = toy.item_popularity()
    pool = NegativePool(toy.train, toy.n_users, toy.n_items, torch.device("cpu"), pop)
    torch.manual_seed(0)
    items = pool.draw(torch.zeros(4000, dtype=torch.long) + 5, 1, power=0.75)[:, 0].numpy()
    uniform = torch.randint(0, toy.n_items, (4000,)).numpy()
    assert pop[items].mean() > 1.5 * pop[uniform].mean()


def test_dns_picks_the_highest_scored_candidate(toy):
    ctx, _ = _ctx(toy)
    cfg = TrainConfig(sampler="dns", dim=16)
    torch.manual_seed(3)
    dns = make_sampler("dns", cfg, torch.device("cpu")).sample(ctx)
    torch.manual_seed(3)
    cands = ctx.pool.draw(ctx.users, cfg.dns_candidates)
    scores = torch.einsum("bd,bmd->bm", ctx.user_e, ctx.items_e[cands])
    assert torch.equal(dns.items, cands.gather(1, scores.argmax(1, keepdim=True))[:, 0])
    rns = make_sampler("rns", cfg, torch.device("cpu")).sample(ctx)
    s = lambda nb: (ctx.user_e * nb.emb).sum(-1).mean()  # noqa: E731
    assert s(dns) > s(rns)


def test_cnsdiff_steps_control_hardness_but_not_in_reference_mode(toy):
    """Larger s gives candidates farther from the positive; the reference's reverse-from-T erases that."""
    ctx, _ = _ctx(toy)
    for preset, expect_spread in (("tuned", True), ("reference", False)):
        cfg = preset_config(preset, dim=16, hard_start=2, hard_stride=9, denoiser_lr=0.01)  # steps 2, 11, 20
        s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
        torch.manual_seed(0)
        for _ in range(300):  # train the denoiser (a no-op for the reference preset: its bug 1)
            s.update(ctx)
        c = s.candidates(ctx.pos_e.detach(), ctx.user_e.detach())  # (B, 3, d)
        cos = torch.nn.functional.cosine_similarity(c, ctx.pos_e.detach().unsqueeze(1), dim=-1).mean(0)
        if expect_spread:
            assert cos[0] > cos[1] > cos[2]
        else:
            # every candidate went through the same T..1 chain: cross-item cosine is high
            flat = torch.nn.functional.normalize(c[:, 0], dim=-1)
            assert (flat @ flat.T).mean() > 0.8


def test_cnsdiff_min_distance_floor(toy):
    ctx, _ = _ctx(toy)
    cfg = preset_config("tuned", dim=16, min_distance=0.3)
    s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
    cands = s.candidates(ctx.pos_e.detach(), ctx.user_e.detach())
    pick = pick_hardest(cands, ctx.pos_e.detach(), ctx.user_e.detach(), cfg.min_distance)
    h = cands[torch.arange(len(pick)), pick]
    dist = (h - ctx.pos_e.detach()).norm(dim=-1) / ctx.pos_e.detach().norm(dim=-1)
    all_d = (cands - ctx.pos_e.detach().unsqueeze(1)).norm(dim=-1) / ctx.pos_e.detach().norm(dim=-1, keepdim=True)
    ok_rows = (all_d >= 0.3).any(1)
    assert (dist[ok_rows] >= 0.3).all()


def test_cnsdiff_mixing_schedule_moves_from_random_to_synthesized():
    s = make_sampler("cnsdiff", TrainConfig(dim=8, mix_ramp_epochs=10), torch.device("cpu"))
    torch.manual_seed(0)
    early, late = s.mix_weights(5000, 0, "cpu").mean(), s.mix_weights(5000, 10, "cpu").mean()
    # Beta(1, 9) has mean 0.1, Beta(9, 1) mean 0.9
    assert abs(float(early) - 0.1) < 0.02 and abs(float(late) - 0.9) < 0.02
    assert abs(float(s.mix_weights(5000, 30, "cpu").mean()) - 0.9) < 0.02  # the ramp stays at its end
    floor = make_sampler("cnsdiff", TrainConfig(dim=8, min_mix=0.5), torch.device("cpu"))
    assert float(floor.mix_weights(1000, 0, "cpu").min()) >= 0.5


def test_mixing_ramp_is_in_epochs_not_in_fractions_of_the_budget():
    short = make_sampler("cnsdiff", TrainConfig(dim=8, epochs=40), torch.device("cpu"))
    long = make_sampler("cnsdiff", TrainConfig(dim=8, epochs=120), torch.device("cpu"))
    for epoch in (0, 3, 5, 19, 25):
        assert short.ramp(epoch) == long.ramp(epoch)
    assert short.ramp(5) == pytest.approx(5 / 20) and short.ramp(25) == 1.0
    # mix_ramp_epochs=0 keeps the reference behaviour: the ramp spans the configured budget
    ref40 = make_sampler("cnsdiff", TrainConfig(dim=8, epochs=41, mix_ramp_epochs=0), torch.device("cpu"))
    ref121 = make_sampler("cnsdiff", TrainConfig(dim=8, epochs=121, mix_ramp_epochs=0), torch.device("cpu"))
    assert ref40.ramp(5) == pytest.approx(5 / 40) and ref121.ramp(5) == pytest.approx(5 / 120)


def test_mixgcf_scores_every_hop_against_the_pooled_user_embedding(toy):
    """Hand check of the hop choice: per layer l, the picked candidate maximizes
    a_l (u.p_l) + (1 - a_l)(u.c_l) with u the MEAN of the user's layer embeddings (the original
    code), not layer l's user embedding."""
    ctx, _ = _ctx(toy, B=16)
    s = make_sampler("mixgcf", TrainConfig(sampler="mixgcf", dim=16, mixgcf_candidates=8), torch.device("cpu"))
    torch.manual_seed(3)  # replay the sampler's own draws: candidates, then the mixing weights
    cands = ctx.pool.draw(ctx.users, 8)
    alpha = torch.rand(16, 1, ctx.layers.shape[0])[:, 0]  # (B, L+1)
    torch.manual_seed(3)
    nb = s.sample(ctx)
    layers = ctx.layers.detach()
    n_u, n_l = ctx.n_users, layers.shape[0]

    def expected(pooled: bool):
        negs, pre = [], []
        for b in range(16):
            mixes, picks = [], []
            for l in range(n_l):
                u = layers[:, ctx.users[b]].mean(0) if pooled else layers[l, ctx.users[b]]
                a, p, c = alpha[b, l], layers[l, n_u + ctx.pos[b]], layers[l, n_u + cands[b]]  # c: (M, d)
                best = int(((a * p + (1 - a) * c) @ u).argmax())
                mixes.append(a * p + (1 - a) * c[best])
                picks.append(c[best])
            negs.append(torch.stack(mixes).mean(0))
            pre.append(torch.stack(picks).mean(0))
        return torch.stack(negs), torch.stack(pre)

    neg, pre = expected(pooled=True)
    assert torch.allclose(nb.emb.detach(), neg, atol=1e-5)
    # the pre-mix candidate: the hop-pooled chosen candidates, without the positive
    assert torch.allclose(nb.synthesized, pre, atol=1e-5)
    per_hop, _ = expected(pooled=False)
    assert not torch.allclose(per_hop, neg, atol=1e-5)  # the two rules differ on this batch



def test_denoiser_is_trained_only_when_asked(toy):
    ctx, _ = _ctx(toy)
    for train, expect_change in ((True, True), (False, False)):
        cfg = TrainConfig(dim=16, train_denoiser=train)
        s = make_sampler("cnsdiff", cfg, torch.device("cpu"))
        before = [p.detach().clone() for p in s.denoiser.parameters()]
        s.update(ctx)
        changed = any(not torch.equal(a, b) for a, b in zip(before, s.denoiser.parameters()))
        assert changed == expect_change


@pytest.mark.parametrize("causal", ["kl", "env-variance", "none"])
def test_causal_terms(toy, causal):
    from cnsdiff_core.diffusion import denoiser_loss

    ctx, _ = _ctx(toy)
    s = make_sampler("cnsdiff", TrainConfig(dim=16, causal=causal, causal_weight=1.0), torch.device("cpu"))
    env = torch.arange(len(ctx.users)) % 4
    loss, parts = denoiser_loss(s.denoiser, s.sched, ctx.pos_e.detach(), s.trainer.weights, causal, 1.0, env, 4)
    assert torch.isfinite(loss)
    assert ("causal" in parts) == (causal != "none")
    if causal != "none":
        assert parts["causal"] >= 0


def test_denoiser_loss_falls_when_trained(toy):
    from cnsdiff_core.diffusion import denoiser_loss

    ctx, _ = _ctx(toy)
    s = make_sampler("cnsdiff", preset_config("tuned", dim=16, denoiser_lr=0.01), torch.device("cpu"))
    z0 = ctx.pos_e.detach()

    def loss_now():
        torch.manual_seed(123)
        s.denoiser.eval()
        return float(denoiser_loss(s.denoiser, s.sched, z0, s.trainer.weights)[0])

    before = loss_now()
    for _ in range(200):
        s.update(ctx)
    assert loss_now() < 0.7 * before


@pytest.mark.parametrize("temperature", [2.0, 0.2, 0.005])
def test_contrastive_loss_equals_the_logsumexp_form(temperature):
    # the fast form skips logsumexp's max subtraction where exp cannot overflow (|logit| <= 1/tau < 80)
    import torch.nn.functional as F

    from cnsdiff_core.samplers.cnsdiff import contrastive_loss

    x = torch.randn(300, 16, requires_grad=True)
    n = torch.randn(50, 16, requires_grad=True)
    torch.manual_seed(0)
    fast = contrastive_loss(x, n, temperature)
    gx, gn = torch.autograd.grad(fast, (x, n))
    torch.manual_seed(0)  # the same noise for the positive view
    a = F.normalize(x, dim=-1)
    pos = F.normalize(x + 0.01 * torch.randn_like(x), dim=-1)
    ref = -((a * pos).sum(-1) / temperature).mean() + torch.logsumexp(
        a @ F.normalize(n, dim=-1).T / temperature, dim=1).mean()
    rx, rn = torch.autograd.grad(ref, (x, n))
    assert torch.isfinite(fast) and torch.allclose(fast, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gn, rn, atol=1e-5)


@pytest.mark.parametrize("B,chunk", [(200, 64), (64, 64), (5, 64), (130, 7)])
def test_mixgcf_candidate_scores_in_blocks_equal_the_one_shot_product_bit_for_bit(B, chunk):
    """The CPU path scores candidates over blocks of users (cache-sized gathers); every block,
    the ragged last one included, must give exactly what one gather and one einsum give, so the
    hop choice (an argmax) and every run's numbers are unchanged by the speed-up."""
    from cnsdiff_core.samplers.mixgcf import candidate_scores

    g = torch.Generator().manual_seed(B)
    layers = torch.randn(4, 300, 64, generator=g)
    u = torch.randn(B, 64, generator=g)
    rows = torch.randint(0, 300, (B, 33), generator=g)
    one_shot = torch.einsum("bd,bmld->bml", u, layers[:, rows].permute(1, 2, 0, 3))
    blocked = candidate_scores(layers, u, rows, chunk=chunk)
    assert blocked.shape == (B, 33, 4)
    assert torch.equal(blocked, one_shot)
