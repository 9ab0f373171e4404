# rounds of (answered k 8, answered k 2), main and the branch in turn, the pair's order and
# which ingest of file K runs first swapped every round; one (resumed, fresh) pair a run
cd /work/wt-derive15j
OUT=${2:-/work/bench-derive15j/bench/runs.jsonl}
for r in $(seq ${3:-1} ${1:-3}); do
  if [ $((r % 2)) = 1 ]; then vs="main br"; order=resumed-first; else vs="br main"; order=fresh-first; fi
  for k in 8 2; do
    for v in $vs; do
      venv=/work/venv-main; pp=; nc=/work/bench-derive15j/numba-main
      [ $v = br ] && venv=/work/venv-derive15j && pp=/work/bench-derive15j/snap && nc=/work/bench-derive15j/numba-snap
      echo "$r $k $v $(date +%T) $(uptime)" >> $OUT.uptime
      PYTHONPATH=$pp NUMBA_CACHE_DIR=$nc nice -n 10 $venv/bin/python benchmarks/resume_overhead.py \
        --at $k --dir /work/bench-derive15j/r20a --rotate-s 20 --pps 50000 --answered --label $v-$k --repeat 1 \
        --order $order --link --no-nostate --json-lines $OUT > /dev/null 2>> $OUT.err
    done
  done
done
# second run: bench2.sh, the same with br2 (HEAD 32ff398, git archive in /work/bench-derive15j/snap2)
