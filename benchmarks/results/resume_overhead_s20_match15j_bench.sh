# rounds of (answered k 8, answered k 2), main and the branch in turn, the pair's order and
# which ingest of file K runs first swapped every round; one (resumed, fresh) pair a run
OUT=$2; D=/work/bench-match15j
for r in $(seq 1 ${1:-3}); do
  if [ $((r % 2)) = 1 ]; then vs="main br"; order=resumed-first; else vs="br main"; order=fresh-first; fi
  for k in 8 2; do
    for v in $vs; do
      if [ $v = main ]; then cd /work/main; py=/work/venv-main/bin/python; else cd /work/wt-match15j; py=/work/venv-match15j/bin/python; fi
      uptime >> $OUT.uptime
      NUMBA_CACHE_DIR=$D/numba-$v nice -n 10 $py benchmarks/resume_overhead.py --at $k --dir $D/r20a \
        --rotate-s 20 --pps 50000 --answered --label $v-$k --repeat 1 --order $order --link \
        --no-nostate --json-lines $OUT > /dev/null 2>> $OUT.err
    done
  done
  # the matcher alone: each staged directory matched 4 times, k 8 (mbench.py is
  # resume_match_alone_s20_match15j_script.txt)
  for v in $vs; do
    if [ $v = main ]; then cd /work/main; py=/work/venv-main/bin/python; else cd /work/wt-match15j; py=/work/venv-match15j/bin/python; fi
    NUMBA_CACHE_DIR=$D/numba-$v nice -n 10 $py $D/mbench.py $D/r20a 8 $v-8 1 4 $OUT.match > /dev/null 2>> $OUT.err
  done
done
echo done >> $OUT.err
