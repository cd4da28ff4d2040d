"""Diffusion in item-embedding space: schedules, denoiser, forward/reverse process."""
from .denoiser import Denoiser, timestep_embedding
from .process import (TrajectoryStep, denoise_trajectory, denoiser_loss, reverse_chain,
                      synthesize_candidates)
from .schedule import NoiseSchedule, ScheduleTensors, schedule_betas

__all__ = ["Denoiser", "timestep_embedding", "NoiseSchedule", "ScheduleTensors", "schedule_betas",
           "reverse_chain", "synthesize_candidates", "denoiser_loss", "denoise_trajectory",
           "TrajectoryStep"]
