"""sfgeval sampler: segmentation-free guidance on diffusers, paired image generation,
prompt subsampling and objective metrics (the GPU side).

Importing this package does not import torch; the submodules that need it do.
"""
