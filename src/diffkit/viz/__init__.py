"""Pictures that explain diffusion, drawn from diffkit's own maths and models (matplotlib, Agg backend).

- `curves`: sqrt(alpha_bar), 1 - alpha_bar and log-SNR of schedules on one figure; a 1-D normal fitted by MLE.
- `process`: forward strips (one image under each schedule), reverse trajectory strips, GIF/MP4 animation.
- `pixelspace`: a PCA + UMAP map of dataset images (or latents) with a density estimate, samples and trajectories.
- `toy`: a 2-D diffusion model trained in seconds with the image models' loss and samplers, and its figure.
- `score`: the toy model's learned score field beside the exact one (`diffkit viz toy2d --score`).
Every plotting function returns a matplotlib Figure; `save_figure` writes it.
"""

from diffkit.viz.curves import fit_normal, plot_gaussian_fit, plot_schedules
from diffkit.viz.figures import save_figure, show_image
from diffkit.viz.pixelspace import PixelMap, fit_pixel_map, plot_maps, plot_pixel_map, project_trajectories
from diffkit.viz.process import forward_strip, save_animation, trajectory_frames, trajectory_strip
from diffkit.viz.toy import (TOY_DATASETS, ToyDenoiser, energy_distance, plot_toy, toy_points, toy_trajectory,
                             train_toy)

__all__ = [
    "TOY_DATASETS", "PixelMap", "ToyDenoiser", "energy_distance", "fit_normal", "fit_pixel_map",
    "forward_strip", "plot_gaussian_fit", "plot_maps", "plot_pixel_map", "plot_schedules", "plot_toy",
    "project_trajectories", "save_animation", "save_figure", "show_image", "toy_points", "toy_trajectory",
    "train_toy", "trajectory_frames", "trajectory_strip",
]
