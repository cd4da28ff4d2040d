"""Diffusion in item-embedding space: schedules (with the one reverse step), the denoiser, the
reverse process and the denoiser's training."""
from .denoiser import TIME_DIM, Denoiser, FoldedStep, timestep_embedding
from .process import TrajectoryStep, denoise_trajectory, reverse_chain, synthesize_candidates
from .schedule import NoiseSchedule, ScheduleTensors, schedule_betas
from .training import DenoiserTrainer, denoiser_loss, env_variance

__all__ = ["Denoiser", "FoldedStep", "TIME_DIM", "timestep_embedding", "NoiseSchedule", "ScheduleTensors",
           "schedule_betas", "reverse_chain", "synthesize_candidates", "denoiser_loss", "env_variance",
           "DenoiserTrainer", "denoise_trajectory", "TrajectoryStep"]
