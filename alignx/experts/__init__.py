"""Stage 1: one LoRA expert per axis, and the shared latent alignment space (k = 256)."""
from alignx.experts.config import PRESETS, ExpertConfig, preset
from alignx.experts.io import DEFAULT_EXPERTS_DIR, ExpertError, list_experts, load_experts, read_card
from alignx.experts.latent import K, LatentSpace, features, heldout_prompts, train_prompts
from alignx.experts.latent_fit import fit_latent_space
from alignx.experts.latent_map import load_map, pca_figure, project_2d
from alignx.experts.train import TrainingCancelled, train_expert

__all__ = ["DEFAULT_EXPERTS_DIR", "ExpertConfig", "ExpertError", "K", "LatentSpace", "PRESETS", "TrainingCancelled",
           "features", "fit_latent_space", "heldout_prompts", "list_experts", "load_experts", "load_map",
           "pca_figure", "preset", "project_2d", "read_card", "train_expert", "train_prompts"]
