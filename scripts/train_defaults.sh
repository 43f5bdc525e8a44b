#!/usr/bin/env bash
# Regenerate the shapes and objects data, extract features, retrain both default checkpoints from
# scratch on the two together, and write the model card figures of each test split (see the
# README's model card for the time it takes). Usage:
#   bash scripts/train_defaults.sh            (or: make defaults)
# Needs the real-object sources (installed on demand here: scripts/install_object_sources.sh) and,
# for the real-photo figures, gcompris-qt-data (scripts/install_real_photos.sh).
# Environment: DATA (default data), RUNS (default runs), SHAPES / OBJECTS (training images of each),
# VAL (validation images of each), TEST (test images of each), SEED (train/val seed), TEST_SEED (the
# unseen seed of the test splits), INSTALL (where the model card installs the new checkpoints,
# default checkpoints; empty: nowhere, e.g. to time a run without replacing the shipped ones).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data} RUNS=${RUNS:-runs} INSTALL=${INSTALL-checkpoints}
SHAPES=${SHAPES:-8000} OBJECTS=${OBJECTS:-6000} VAL=${VAL:-300} TEST=${TEST:-1000} SEED=${SEED:-0} TEST_SEED=${TEST_SEED:-1234}
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

$PY -c "from mmapp.data.objects.sources import find_sources; find_sources()" 2>/dev/null \
  || bash scripts/install_object_sources.sh
$PY -m mmapp data shapes --out "$DATA/shapes" --train "$SHAPES" --val "$VAL" --test 0 --seed "$SEED" --quiet
$PY -m mmapp data shapes --out "$DATA/shapes_test" --train 0 --val 0 --test "$TEST" --seed "$TEST_SEED" --quiet
$PY -m mmapp data objects --out "$DATA/objects" --train "$OBJECTS" --val "$VAL" --test 0 --seed "$SEED" --quiet
$PY -m mmapp data objects --out "$DATA/objects_test" --train 0 --val 0 --test "$TEST" --seed "$TEST_SEED" --quiet
$PY -m mmapp data mix "$DATA/shapes" "$DATA/objects" --out "$DATA/mix"
stamp "data generated"
# Two 14x14 grids (docs/grids.md): the captioner reads the joined stride-16 + last stage at 224 input,
# the VQA model the last stage at 448 input (its attention grounds far better there). Both get each
# cell's 4x4 pixels too (encoder.pixel_patch): ImageNet features lose colour (docs/training.md).
$PY -m mmapp features --images "$DATA/mix/images" --out "$DATA/mix/features" encoder.pixel_patch=4
$PY -m mmapp features --images "$DATA/mix/images" --out "$DATA/mix/features448" encoder.input_size=448 \
  encoder.grid=last encoder.pixel_patch=4
stamp "features extracted"

ann="$DATA/mix/annotations"
# The two trainings run side by side, one thread each (how the committed checkpoints were trained).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY -m mmapp train vqa --config configs/default_vqa.yaml --quiet \
  --out "$RUNS/default_vqa" data.features="$DATA/mix/features448" \
  data.train_questions="$ann/questions_train.json" data.train_annotations="$ann/annotations_train.json" \
  data.val_questions="$ann/questions_val.json" data.val_annotations="$ann/annotations_val.json" \
  data.image_index="$ann/captions_train.json,$ann/captions_val.json" data.train_instances="$ann/instances_train.json" &
vqa_pid=$!
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY -m mmapp train caption --config configs/default_caption.yaml --quiet \
  --out "$RUNS/default_caption" data.features="$DATA/mix/features" \
  data.train_captions="$ann/captions_train.json" data.val_captions="$ann/captions_val.json" \
  data.train_instances="$ann/instances_train.json" &
caption_pid=$!
wait "$vqa_pid"
wait "$caption_pid"
stamp "trained"

# the real photos' system package (GCompris's photographs; the Python packages' photos need nothing)
bash scripts/install_real_photos.sh || echo "gcompris-qt-data not installed: its photos are skipped" >&2
$PY scripts/model_card.py --captioner "$RUNS/default_caption/best.safetensors" \
  --vqa "$RUNS/default_vqa/best.safetensors" --data "shapes=$DATA/shapes_test" --data "objects=$DATA/objects_test" \
  --split test --real-photos --out "$RUNS/model_card" ${INSTALL:+--install "$INSTALL"}
stamp "defaults rebuilt"
