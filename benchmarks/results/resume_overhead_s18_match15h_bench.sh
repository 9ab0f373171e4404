#!/bin/bash
# one round: $1 = K, $2 = repeat, $3 = order of checkouts ("main match15h" or reverse), $4 = jsonl
k=$1; rep=$2; order=$3; out=$4
for v in $order; do
  NUMBA_CACHE_DIR=/work/bench-match15h/numba-$v nice -n 10 /work/venv-$v/bin/python \
    /work/wt-match15h/benchmarks/resume_overhead.py --at $k --dir /work/bench-match15h/r20a \
    --rotate-s 20 --answered --label $v-$k --repeat $rep --order alternate --json-lines $out
done
