#!/bin/bash
# CPU (user+sys) of a first TLS ingest on an empty Numba cache: base and branch alternated
# usage: first_ingest_cpu.sh ROUNDS BASE_VENV BRANCH_VENV SAMPLE_DIR
for i in $(seq 1 "$1"); do
  if [ $((i % 2)) -eq 1 ]; then order="base branch"; else order="branch base"; fi
  for side in $order; do
    if [ $side = base ]; then v=$2; else v=$3; fi
    c=$(mktemp -d); d=$(mktemp -d)
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    NUMBA_CACHE_DIR=$c /usr/bin/time -o "$d/time" -f "%U %S" nice -n 5 "$v/bin/pcapflow" ingest \
      "$4/binance_wsapi_tls13.pcap" --keylog "$4/binance_wsapi_tls13.keylog" --data "$d/d" \
      --workers 1 >/dev/null 2>&1
    t=$(tail -1 "$d/time")
    echo "{\"round\": $i, \"side\": \"$side\", \"load\": \"$load\", \"cpu\": $(echo $t | awk '{print $1+$2}')}"
    rm -rf "$c" "$d"
  done
done
