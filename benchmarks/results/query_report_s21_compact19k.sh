#!/bin/bash
# qbench.sh ROUNDS OUT DS...: CPU and wall of pcapflow query/report per dataset, main's venv
# and this branch's alternated (the order swapped every round)
R=$1; OUT=$2; shift 2
T0=$(date +%s)
for r in $(seq 1 $R); do
  if [ $((r % 2)) = 1 ]; then VS="main br"; else VS="br main"; fi
  for v in $VS; do
    if [ $v = main ]; then P=/work/venv-main/bin/pcapflow; else P=/work/venv-heap19j/bin/pcapflow; fi
    for ds in "$@"; do
      for q in "SELECT count(*), quantile_cont(rtt_ns, 0.99) FROM tcp_rtt WHERE ts_sent >= TIMESTAMPTZ '2024-06-03 13:40:00+00' AND ts_sent < TIMESTAMPTZ '2024-06-03 13:50:00+00'" "SELECT count(*) FROM flows WHERE dst_port = 443" "SELECT kind, count(*) FROM tcp_events GROUP BY 1"; do
        s=$( { /usr/bin/time -f "%U %S %e" nice -n 10 $P query --data $ds "$q" >/dev/null; } 2>&1 | tail -1)
        echo "{\"round\": $r, \"tree\": \"$v\", \"ds\": \"$(basename $ds)\", \"cmd\": \"query\", \"q\": \"${q:0:40}\", \"cpu\": $(echo $s | awk '{print $1+$2}'), \"wall\": $(echo $s | awk '{print $3}'), \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\"}" >> $OUT
      done
      s=$( { /usr/bin/time -f "%U %S %e" nice -n 10 $P report --data $ds >/dev/null; } 2>&1 | tail -1)
      echo "{\"round\": $r, \"tree\": \"$v\", \"ds\": \"$(basename $ds)\", \"cmd\": \"report\", \"q\": \"\", \"cpu\": $(echo $s | awk '{print $1+$2}'), \"wall\": $(echo $s | awk '{print $3}'), \"load\": \"$(cut -d' ' -f1 /proc/loadavg)\"}" >> $OUT
    done
  done
done
