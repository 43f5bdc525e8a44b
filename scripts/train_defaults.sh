#!/usr/bin/env bash
# Regenerate the shapes data, extract features, retrain both default checkpoints from scratch and
# write the model card figures (see the README's model card for the time it takes). Usage:
#   bash scripts/train_defaults.sh            (or: make defaults)
# Environment: DATA (default data/shapes), TEST_DATA (default data/shapes_test), RUNS (default runs),
# TRAIN/VAL/TEST image counts, SEED (train/val seed), TEST_SEED (the unseen seed of the test split).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/shapes} TEST_DATA=${TEST_DATA:-data/shapes_test} RUNS=${RUNS:-runs}
TRAIN=${TRAIN:-8000} VAL=${VAL:-300} TEST=${TEST:-1000} SEED=${SEED:-0} TEST_SEED=${TEST_SEED:-1234}
start=$(date +%s)

$PY -m mmapp data shapes --out "$DATA" --train "$TRAIN" --val "$VAL" --test 0 --seed "$SEED"
$PY -m mmapp data shapes --out "$TEST_DATA" --train 0 --val 0 --test "$TEST" --seed "$TEST_SEED"
# Two 14x14 grids (docs/grids.md): the captioner reads the joined stride-16 + last stage at 224 input,
# the VQA model the last stage at 448 input (its attention grounds far better there). Both get each
# cell's 4x4 pixels too (encoder.pixel_patch): ImageNet features lose colour (docs/training.md).
$PY -m mmapp features --images "$DATA/images" --out "$DATA/features" encoder.pixel_patch=4
$PY -m mmapp features --images "$DATA/images" --out "$DATA/features448" encoder.input_size=448 encoder.grid=last \
  encoder.pixel_patch=4

ann="$DATA/annotations"
# The two trainings run side by side, one thread each (how the committed checkpoints were trained).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY -m mmapp train vqa --config configs/shapes_vqa.yaml --quiet \
  --out "$RUNS/shapes_vqa" data.features="$DATA/features448" \
  data.train_questions="$ann/questions_train.json" data.train_annotations="$ann/annotations_train.json" \
  data.val_questions="$ann/questions_val.json" data.val_annotations="$ann/annotations_val.json" \
  data.image_index="$ann/captions_train.json,$ann/captions_val.json" data.train_instances="$ann/instances_train.json" &
vqa_pid=$!
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY -m mmapp train caption --config configs/shapes_caption.yaml --quiet \
  --out "$RUNS/shapes_caption" data.features="$DATA/features" \
  data.train_captions="$ann/captions_train.json" data.val_captions="$ann/captions_val.json" \
  data.train_instances="$ann/instances_train.json" &
caption_pid=$!
wait "$vqa_pid"
wait "$caption_pid"

$PY scripts/model_card.py --captioner "$RUNS/shapes_caption/best.safetensors" \
  --vqa "$RUNS/shapes_vqa/best.safetensors" --data "$TEST_DATA" --split test \
  --out "$RUNS/model_card" --install checkpoints
echo "defaults rebuilt in $(( ($(date +%s) - start) / 60 )) minutes"
