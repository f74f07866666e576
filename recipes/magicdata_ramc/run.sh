#!/usr/bin/env bash
# MagicData-RAMC (Mandarin conversations, speakers from many regions): prepare -> train Qifusion-Net
# (paper size, GPUs) -> average -> decode the test set, CER per region (the accent label).
# See README.md in this directory.
#
#   recipes/magicdata_ramc/run.sh --ramc-root /data/MagicData-RAMC    # all stages, every visible GPU
#   recipes/magicdata_ramc/run.sh --stage 1 --nproc 4 --train-args "--set train.max_epochs=60"
#   recipes/magicdata_ramc/run.sh --stage 3 --chunk-sizes "-1 16 8 4"

# shellcheck source=../_common.sh
. "$(dirname "$0")/../_common.sh"

stage=0                  # first stage to run
stop_stage=4             # last stage to run
# stage 0: prepare
ramc_root=""             # the corpus (openslr 123): holds MDT2021S003/ or SPKINFO.txt, WAV/, TXT/
data=data/magicdata_ramc # prepared data: train/ dev/ test/ (Kaldi-style + segments, accent = region)
shards=0                 # >0: also write N tar shards per split (qifusion prepare --shards)
# stage 1: train
config=$QIFUSION_ROOT/conf/qifusion.yaml   # paper size; conf/baseline.yaml for the Conformer baseline
exp=exp/magicdata_ramc/qifusion
train_args=""            # extra `qifusion train` options, e.g. "--set train.max_epochs=60"
device=cuda              # cuda | cpu
nproc=auto               # processes (GPUs) on this node; auto = every visible GPU (1 on CPU)
dist_args=""             # torchrun rendezvous for multi-node, e.g. "--nnodes 2 --node-rank 0
                         # --rdzv-backend c10d --rdzv-endpoint host0:29400" (default --standalone)
# stage 2: average
average_num=5            # checkpoints averaged into $exp/avg_N; 0 = decode $exp/final
average_by=dev_loss      # dev_loss | last
# stage 3: decode
test_set=""              # default: $data/test
decode_modes="attention_rescoring ctc_greedy"
chunk_sizes="-1 16"      # -1 = full context
left_chunks=-1
decode_args=""           # extra `qifusion decode` options, e.g. "--batch-size 64"

usage="Usage: $0 --ramc-root DIR [--name value ...]   (stages: 0 prepare, 1 train, 2 average,
3 decode, 4 per-region table). Every variable at the top of this script is an option:
--stage N --stop-stage M --config FILE --exp DIR --data DIR --nproc N --train-args '--set k=v' ..."
parse_options "$@"
test_set=${test_set:-$data/test}
model=$(model_dir_of "$exp" "$average_num")

if run_stage 0 "prepare MagicData-RAMC from '$ramc_root' into $data"; then
  [[ -n $ramc_root ]] || die "stage 0 needs --ramc-root DIR (the MagicData-RAMC corpus root)"
  qf prepare magicdata-ramc "$ramc_root" --out "$data" --shards "$shards"
fi

if run_stage 1 "train $config into $exp"; then
  resolve_nproc
  split_words train_args extra
  qifusion_train "$config" "$data" "$exp" "$nproc" "$device" "${extra[@]}"
fi

if run_stage 2 "average the $average_num best checkpoints (by $average_by)"; then
  if ((average_num > 0)); then qf average --exp "$exp" --num "$average_num" --by "$average_by"
  else log "average_num is 0: stage 3 decodes $exp/final"; fi
fi

if run_stage 3 "decode $test_set with $model ($decode_modes; chunk sizes $chunk_sizes)"; then
  decode_all "$model" "$test_set" "$exp/decode_$(basename "$model")"
fi

if run_stage 4 "CER per region into $exp/RESULTS.md"; then
  run "$PYTHON" "$QIFUSION_ROOT/recipes/_report.py" \
    --title "MagicData-RAMC: $(basename "$exp") ($(basename "$model"))" \
    --system "$(basename "$exp")=$exp/decode_$(basename "$model")" --label region --out "$exp/RESULTS.md"
fi
log "done (stages $stage..$stop_stage)"
