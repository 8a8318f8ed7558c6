"""kpbench: a benchmark suite for image generation from key local patches (Lee et al., ECCV 2018)."""

__version__ = "0.1.0"
