#!/bin/bash
# per round: main and lead19 in turn (order swapped each round); k=2 default traffic and k=8 answered, --link
cd /work/wt-lead19
R=$1
for i in $(seq 1 $R); do
  if [ $((i % 2)) = 1 ]; then pair="main lead19"; else pair="lead19 main"; fi
  for v in $pair; do
    uptime >> /work/bench19/res.uptime
    NUMBA_CACHE_DIR=/work/bench19/numba-$v /work/venv-$v/bin/python \
      benchmarks/resume_overhead.py --at 2 --dir /work/bench-commit15h/r20 --rotate-s 20 --pps 50000 \
      --label $v --repeat 2 --order alternate --link --json-lines /work/bench19/res_k2.jsonl > /dev/null 2>>/work/bench19/res.err
    NUMBA_CACHE_DIR=/work/bench19/numba-$v /work/venv-$v/bin/python \
      benchmarks/resume_overhead.py --at 8 --dir /work/bench-match15h/r20a --rotate-s 20 --pps 50000 \
      --answered --label $v-8 --repeat 2 --order alternate --link --json-lines /work/bench19/res_k8.jsonl > /dev/null 2>>/work/bench19/res.err
  done
done
uptime >> /work/bench19/res.uptime
echo finished >> /work/bench19/res.err
