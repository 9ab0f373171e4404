# rounds of (answered k 8, answered k 2, default k 2), main and the branch in turn, the pair's
# order and which ingest of file K runs first swapped every round; one round (resumed, fresh) a run
cd /work/wt-match15i
OUT=${2:-/work/bench-match15i/final2.jsonl}
for r in $(seq ${3:-1} ${1:-3}); do
  if [ $((r % 2)) = 1 ]; then vs="main br"; order=resumed-first; else vs="br main"; order=fresh-first; fi
  for cfg in "r20a 8 --answered" "r20a 2 --answered" "r20 2"; do
    set -- $cfg
    for v in $vs; do
      venv=/work/venv-main; [ $v = br ] && venv=/work/venv-match15i
      uptime >> $OUT.uptime
      NUMBA_CACHE_DIR=/work/bench-match15i/numba-$v nice -n 10 $venv/bin/python benchmarks/resume_overhead.py \
        --at $2 --dir /work/bench-match15i/$1 --rotate-s 20 --pps 50000 $3 --label $v-$2 --repeat 1 \
        --order $order --link --no-nostate --json-lines $OUT > /dev/null 2>> $OUT.err
    done
  done
done
