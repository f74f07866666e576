#!/usr/bin/env bash
# Multi-accent English on the embedded synthetic corpus (`qifusion synth`): the Conformer baseline
# against Qifusion-Net, same data, same size. See README.md in this directory.
#
#   recipes/accents_en/run.sh                                  # everything, benchmark preset
#   recipes/accents_en/run.sh --preset demo --stage 0 --stop-stage 0
#   recipes/accents_en/run.sh --stage 4 --decode-modes ctc_greedy --chunk-sizes "16 8 4"

# shellcheck source=../_common.sh
. "$(dirname "$0")/../_common.sh"

stage=0                  # first stage to run
stop_stage=5             # last stage to run
# stage 0: synth
preset=benchmark         # demo | benchmark | l2 (see docs/synth.md)
synth_seed=0
synth_jobs=2
synth_args=""            # extra `qifusion synth` options, e.g. "--utts-per-accent 40 --accents en-us,en-gb"
data=data/accents_en     # corpus root: train/ dev/ test/
# stages 1-2: train
baseline_config=$QIFUSION_ROOT/conf/baseline_small.yaml
qifusion_config=$QIFUSION_ROOT/conf/qifusion_small.yaml
exp=exp/accents_en       # gets baseline/ and qifusion/
train_args=""            # extra `qifusion train` options for both, e.g. "--set train.max_epochs=10"
baseline_args=""         # ... for the baseline only
qifusion_args=""         # ... for Qifusion only
device=cpu               # cpu | cuda
nproc=1                  # >1: torchrun --nproc_per_node $nproc (DDP; gloo on CPU, NCCL on GPU)
dist_args=""             # torchrun rendezvous options for multi-node (default --standalone)
# stage 3: average
average_num=5            # checkpoints averaged into EXP/<system>/avg_N; 0 = decode EXP/<system>/final
average_by=dev_loss      # dev_loss | last
# stage 4: decode
test_set=""              # default: $data/test
decode_modes="attention_rescoring ctc_greedy"
chunk_sizes="-1 16"      # -1 = full context
left_chunks=-1
decode_args=""           # extra `qifusion decode` options, e.g. "--beam-size 5"

usage="Usage: $0 [--name value ...]   (stages: 0 synth, 1 train baseline, 2 train Qifusion,
3 average, 4 decode, 5 report). Every variable at the top of this script is an option:
--stage N --stop-stage M --preset demo --data DIR --exp DIR --train-args '--set train.max_epochs=10' ..."

parse_options "$@"
test_set=${test_set:-$data/test}
systems=(baseline qifusion)

if run_stage 0 "synthesise the corpus (preset $preset) into $data"; then
  split_words synth_args extra
  qf synth --out "$data" --preset "$preset" --seed "$synth_seed" --jobs "$synth_jobs" "${extra[@]}"
fi

if run_stage 1 "train the baseline ($baseline_config) into $exp/baseline"; then
  split_words train_args common; split_words baseline_args own
  qifusion_train "$baseline_config" "$data" "$exp/baseline" "$nproc" "$device" "${common[@]}" "${own[@]}"
fi

if run_stage 2 "train Qifusion-Net ($qifusion_config) into $exp/qifusion"; then
  split_words train_args common; split_words qifusion_args own
  qifusion_train "$qifusion_config" "$data" "$exp/qifusion" "$nproc" "$device" "${common[@]}" "${own[@]}"
fi

if run_stage 3 "average the $average_num best checkpoints (by $average_by)"; then
  if ((average_num > 0)); then
    for sys in "${systems[@]}"; do
      qf average --exp "$exp/$sys" --num "$average_num" --by "$average_by"
    done
  else
    log "average_num is 0: stage 4 decodes $exp/<system>/final"
  fi
fi

if run_stage 4 "decode $test_set ($decode_modes; chunk sizes $chunk_sizes)"; then
  for sys in "${systems[@]}"; do
    model=$(model_dir_of "$exp/$sys" "$average_num")
    decode_all "$model" "$test_set" "$exp/$sys/decode_$(basename "$model")"
  done
fi

if run_stage 5 "compare the systems into $exp/RESULTS.md"; then
  name=$(basename "$(model_dir_of x "$average_num")")
  run "$PYTHON" "$QIFUSION_ROOT/recipes/_report.py" --title "accents_en: baseline vs Qifusion-Net ($name)" \
    --system "baseline=$exp/baseline/decode_$name" --system "qifusion=$exp/qifusion/decode_$name" \
    --reference baseline --out "$exp/RESULTS.md"
fi
log "done (stages $stage..$stop_stage)"
