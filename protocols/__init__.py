"""Evaluation protocols, one file each; importing this package registers them all.

| name | file | question it answers |
|---|---|---|
| patches | patches.py | key patches vs random patches of the same count and size distribution |
| noise | noise.py | robustness to Gaussian noise on all patches, or on one |
| classification | classification.py | how good the part encoder is as a feature extractor |
| fid | fid.py | FID/KID of generated vs held-out real images |
| num_patches | num_patches.py | N = 1..5 patches at test time |
| combination | combination.py | patches taken from two or three different images |
"""

from protocols import classification, combination, fid, noise, num_patches, patches  # noqa: F401
