#!/bin/bash
# the feed scan's kernel alone (feed_kernel_time.py, 5 runs a process, thread CPU), base and
# branch alternated (odd rounds: base first), nice 10: one JSON line a side and round
# usage: feed_kernel_ab.sh ROUNDS BASE_PYTHON BRANCH_PYTHON DUMP_DIR
here=$(cd "$(dirname "$0")" && pwd)
for i in $(seq 1 "$1"); do
  if [ $((i % 2)) -eq 1 ]; then order="base branch"; else order="branch base"; fi
  for side in $order; do
    if [ $side = base ]; then py=$2; else py=$3; fi
    r=$(cd /tmp && nice -n 10 "$py" "$here/feed_kernel_time.py" "$4" 5)
    echo "{\"round\": $i, \"side\": \"$side\", \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"r\": $r}"
  done
done
