# The settings of the paired studies of docs/experiments.md, in one place: sourced by run_studies.sh (CPU)
# and device_studies.sh (a lent GPU machine), so both run the same protocol.
# fmnist32, the default 4000-step run, 4 seeds, fp32; primary endpoint the training-time FID of 10000
# fixed-latent samples in the shipped classifier's features, averaged over the last 3 evaluations.
STUDY_ARGS=(--seeds 4 --steps 4000 --fid-samples 10000 --endpoint-evals 3 --features fmnist
            --set train.precision=fp32)
ATTENTION_ARMS=none,attn8,attn16,res16  # the stabilisation study runs all of its arms

# study_folder_from_docs DOCS FOLDER: a machine without the study folder FOLDER starts it from the finished
# runs committed in DOCS (docs/studies/NAME, written by sync_study.py); the runner skips those.
study_folder_from_docs() {
  [ -d "$2" ] || { [ -f "$1/study.json" ] && mkdir -p "$(dirname "$2")" && cp -r "$1" "$2"; } || true
}
