import numpy as np
import pytest
import torch

from cnsdiff_core.config import ConfigError
from cnsdiff_core.diffusion import Denoiser, NoiseSchedule, denoise_trajectory, reverse_chain, schedule_betas

KINDS = ["linear", "linear-var", "cosine"]


@pytest.mark.parametrize("kind", KINDS)
def test_schedule_contract(kind):
    """Shared contract over every schedule variant."""
    s = NoiseSchedule.create(kind, steps=20, scale=1.0 if kind == "cosine" else 0.1)
    assert s.betas.shape == (21,) and s.betas[0] == 0
    assert np.all((s.betas[1:] > 0) & (s.betas[1:] < 1))
    abar = s.alphas_cumprod
    assert abar[0] == 1 and np.all(np.diff(abar) < 0)  # noise grows with t
    assert np.all(np.diff(s.snr()[1:]) < 0)
    # posterior at t = 1 returns the predicted z_0 exactly
    assert s.posterior_mean_coef1[1] == pytest.approx(1.0) and s.posterior_mean_coef2[1] == pytest.approx(0.0)
    # posterior mean coefficients: z_0 = z_t = x must map to a point on the forward mean path
    t = 10
    lhs = s.posterior_mean_coef1[t] * np.sqrt(1) + s.posterior_mean_coef2[t] * np.sqrt(abar[t])
    assert lhs == pytest.approx(np.sqrt(abar[t - 1]), rel=1e-6)
    w = s.loss_weights(normalize=True)
    assert w[1:].mean() == pytest.approx(1.0)


def test_linear_var_matches_its_definition_and_is_tiny():
    s = NoiseSchedule.create("linear-var", 20, 0.1, 1e-4, 0.02)
    assert 1 - s.alphas_cumprod[1:] == pytest.approx(np.linspace(1e-5, 2e-3, 20))
    std = s.noise_std()
    assert 0.02 < std[10] < 0.04 and 0.035 < std[20] < 0.05  # METHOD.md: 0.03-0.045 at steps 10-20


def test_cosine_reaches_real_noise():
    s = NoiseSchedule.create("cosine", 20, 1.0)
    assert s.noise_std()[20] > 0.99


def test_loss_weightings_fix_the_t1_artefact_and_keep_the_reference_one():
    s = NoiseSchedule.create("linear-var", 20, 0.1)
    snr = s.snr()
    raw = s.loss_weights(normalize=False, kind="snr-diff")
    assert raw[3] == pytest.approx(snr[2] - snr[3])  # the definition for t >= 2
    assert raw[1] == pytest.approx(raw[2])  # t = 1 gets t = 2's weight, not the DiffRec 1
    ref = s.loss_weights(normalize=True, kind="snr-diff-ref")
    assert ref[1] < 1e-3 and ref[2] > 10  # the artefact: t=1 starved, t=2 takes most of the weight
    fixed = s.loss_weights(normalize=True, kind="snr-diff")
    assert fixed[1] == pytest.approx(fixed[2]) and fixed[1:].mean() == pytest.approx(1.0)
    uni = s.loss_weights(normalize=True, kind="uniform")
    assert uni[1:] == pytest.approx(np.ones(20)) and uni[0] == 0


def test_unnormalized_weights_span_orders_of_magnitude():
    w = NoiseSchedule.create("linear-var", 20, 0.1).loss_weights(normalize=False)
    assert w[2:].max() / w[2:].min() > 100


@pytest.mark.parametrize("args, match", [
    (("quad", 20), "schedule='quad' is invalid"),
    (("linear", 0), "steps=0 is invalid"),
    (("linear", 20, 0.1, 0.5, 0.1), "beta bounds"),
    (("linear", 20, 100.0, 0.01, 0.02), "outside \\(0, 1\\)"),
])
def test_invalid_schedules(args, match):
    with pytest.raises(ConfigError, match=match):
        schedule_betas(*args)


def test_add_noise_uses_callers_noise_and_reverse_stops_at_r():
    torch.manual_seed(0)
    sched = NoiseSchedule.create("cosine", 20, 1.0).tensors()
    z0, eps = torch.randn(4, 8), torch.randn(4, 8)
    a, b = sched.add_noise(z0, 10, eps), sched.add_noise(z0, 10, eps)
    assert torch.equal(a, b)
    assert torch.allclose(sched.add_noise(z0, 0, eps), z0)
    den = Denoiser(8, 16, 64, 0.0).eval()
    _, recs = reverse_chain(den, sched, a, 10, 7, record=True)
    assert [r[0] for r in recs] == [10, 9, 8]
    _, recs = reverse_chain(den, sched, a, 10, 7, reverse_from_T=True, record=True)
    assert [r[0] for r in recs] == list(range(20, 0, -1))


def test_trajectory_records_forward_then_reverse():
    sched = NoiseSchedule.create("cosine", 20, 1.0).tensors()
    den = Denoiser(8, 16, 64, 0.0)
    traj = denoise_trajectory(den, sched, torch.randn(8), 10, 4, torch.randn(8))
    phases = [s.phase for s in traj]
    assert phases.count("forward") == 11 and phases.count("reverse") == 6
    assert traj[-1].t == 4 and traj[-1].z0_hat is not None
    last = traj[-1]
    prev = traj[-2].z
    assert np.allclose(last.z, last.coef1 * last.z0_hat + last.coef2 * prev, atol=1e-5)


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("reverse_from_T", [False, True])
def test_candidates_batched_or_folded_equal_one_chain_per_step(reverse_from_T, folded):
    from cnsdiff_core.diffusion import synthesize_candidates

    torch.manual_seed(0)
    sched = NoiseSchedule.create("cosine", 20, 1.0).tensors()
    den = Denoiser(8, 16, 64, 0.0).eval()
    z0, noise = torch.randn(5, 8), torch.randn(3, 5, 8)
    steps, stops = [10, 14, 18], [0, 11, 15]  # chains of different lengths
    got = synthesize_candidates(den, sched, z0, steps, stops, noise, reverse_from_T=reverse_from_T, folded=folded)
    for k, (s, r) in enumerate(zip(steps, stops)):
        want = reverse_chain(den, sched, sched.add_noise(z0, s, noise[k]), s, r, reverse_from_T=reverse_from_T)
        assert torch.allclose(got[:, k], want, atol=1e-5)


def test_reverse_chain_from_step_zero_returns_its_input():
    sched = NoiseSchedule.create("cosine", 20, 1.0).tensors()
    den = Denoiser(8, 16, 64, 0.0).eval()
    z = torch.randn(4, 8)
    assert torch.equal(reverse_chain(den, sched, z, 0, 0), z)


@pytest.mark.parametrize("condition_on_user", [False, True])
@pytest.mark.parametrize("reverse_from_T", [False, True])
def test_folded_cpu_synthesis_equals_the_batched_denoiser_path(condition_on_user, reverse_from_T):
    # On CPU the chains run through Denoiser.folded (sigmoid form of tanh, folded weights); the
    # batched path calls Denoiser.forward and ScheduleTensors.step. Synthesis is always without
    # dropout, whatever mode the denoiser is in (and its mode is restored).
    from cnsdiff_core.diffusion import synthesize_candidates

    torch.manual_seed(1)
    sched = NoiseSchedule.create("linear-var", 20, 0.5).tensors()
    z0, user, noise = torch.randn(300, 64), torch.randn(300, 64), torch.randn(5, 300, 64)
    steps, stops = [2, 6, 10, 14, 18], [0, 3, 7, 11, 15]
    u = user if condition_on_user else None
    den = Denoiser(64, 64, 64, 0.5, condition_on_user=condition_on_user).train()
    fast = synthesize_candidates(den, sched, z0, steps, stops, noise, u, reverse_from_T, folded=True)
    plain = synthesize_candidates(den, sched, z0, steps, stops, noise, u, reverse_from_T, folded=False)
    assert den.training
    assert fast.shape == (300, 5, 64)
    assert torch.allclose(fast, plain, atol=2e-5), (fast - plain).abs().max()
    assert not torch.allclose(fast[:, 0], fast[:, 4])  # the chains differ


def test_denoiser_dropout_on_cpu_is_inverted_dropout():
    den = Denoiser(8, 16, 64, 0.3)
    h = torch.ones(50_000, 8)
    out = den.train()._dropout(h)
    kept = out > 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.01  # keeps 1 - p of the entries ...
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))  # ... scaled by 1 / (1 - p)
    assert torch.equal(den.eval()._dropout(h), h)  # eval: identity


@pytest.mark.parametrize("condition_on_user", [False, True])
def test_the_folded_step_equals_the_plain_module_and_schedule_step_at_every_t(condition_on_user):
    torch.manual_seed(2)
    sched = NoiseSchedule.create("cosine", 20, 0.7).tensors()
    den = Denoiser(16, 32, 64, 0.5, condition_on_user=condition_on_user).eval()
    x, user = torch.randn(40, 16), torch.randn(40, 16)
    u = user if condition_on_user else None
    step = den.folded(sched, 20, u)
    for t in range(1, 21):
        tt = torch.full((40,), t)
        with torch.no_grad():
            want = sched.step(den(x, tt, u), tt, x)
        torch.testing.assert_close(step(x, t), want, rtol=1e-5, atol=2e-6)
        eps = torch.randn(40, 16)
        with torch.no_grad():
            want = sched.step(den(x, tt, u), t, x, eps)
        torch.testing.assert_close(step(x, t, eps), want, rtol=1e-5, atol=2e-6)
    with pytest.raises(ValueError, match="conditioned on the user"):
        Denoiser(16, 32, 64, 0.0, condition_on_user=True).folded(sched, 20, None)


@pytest.mark.parametrize("t", [1, 2, 7, 20])
def test_posterior_noise_has_the_posterior_mean_and_variance(t):
    """z_{t-1} sampled with posterior noise: mean c1 z0_hat + c2 z_t and variance exp(log var_t)
    per coordinate for t > 1 (DDPM eq. 7), and no noise at t = 1; the same through the folded path."""
    sched = NoiseSchedule.create("linear-var", 20, 1.0).tensors()
    gen = torch.Generator().manual_seed(t)
    n, d = 40_000, 4
    zt, z0_hat = torch.randn(1, d, generator=gen).expand(n, d), torch.randn(1, d, generator=gen).expand(n, d)
    samples = sched.step(z0_hat, t, zt, torch.randn(n, d, generator=gen))
    mean = sched.posterior_mean(z0_hat[:1], zt[:1], t)[0]
    var = float(torch.exp(sched.post_log_var[t])) if t > 1 else 0.0
    sd = var ** 0.5
    assert torch.allclose(samples.mean(0), mean, atol=4 * sd / n ** 0.5 + 1e-6)
    if t > 1:
        assert torch.allclose(samples.var(0), torch.full((d,), var), rtol=0.05)
        assert var > 0
    else:
        assert torch.equal(samples, mean.expand(n, d))
    # batched steps (a tensor of t) and the folded denoiser add the same noise
    batched = sched.step(z0_hat, torch.full((n,), t), zt, torch.randn(n, d, generator=gen))
    assert torch.allclose(batched.var(0), torch.full((d,), var), rtol=0.05, atol=1e-7)
    den = Denoiser(d, 8, 64, 0.0).eval()
    folded = den.folded(sched, 20)(zt.contiguous(), t, torch.randn(n, d, generator=gen))
    with torch.no_grad():
        plain_mean = sched.step(den(zt[:1], torch.full((1,), t)), t, zt[:1])[0]
    assert torch.allclose(folded.mean(0), plain_mean, atol=4 * sd / n ** 0.5 + 1e-5)
    assert torch.allclose(folded.var(0), torch.full((d,), var), rtol=0.05, atol=1e-7)


def test_denoiser_from_config_and_one_training_step_shared_by_sampler_and_lab():
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.diffusion import DenoiserTrainer
    from cnsdiff_core.samplers import METHOD, BatchContext, make_sampler

    cfg = preset_config("tuned", dim=16, denoiser_hidden=24, condition_on_user=True, causal="kl")
    den = Denoiser.from_config(cfg)
    assert (den.hidden.out_features, den.out.out_features, den.condition_on_user) == (24, 16, True)
    torch.manual_seed(5)
    sampler = make_sampler(METHOD, cfg, torch.device("cpu"))
    torch.manual_seed(5)
    trainer = DenoiserTrainer(cfg)
    for a, b in zip(sampler.denoiser.parameters(), trainer.denoiser.parameters()):
        assert torch.equal(a, b)
    pos, user = torch.randn(32, 16), torch.randn(32, 16)
    ctx = BatchContext(None, None, None, user, pos, None, None, 0, 0, None, torch.zeros(32, dtype=torch.long))
    torch.manual_seed(9)
    sampler.update(ctx)
    torch.manual_seed(9)
    trainer.step(pos, ctx.env, user)
    for a, b in zip(sampler.denoiser.parameters(), trainer.denoiser.parameters()):
        assert torch.equal(a, b)
