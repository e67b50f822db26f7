#!/bin/bash
# Diagnose the compile process on the GPU (--compile-process on): one app launch with --compile auto, one image, then /health
# every 15 s for up to $1 s; the server log and the compile process's log go to $OUT.
lim=${1:-300}
port=7999; mkdir -p /tmp/zout /tmp/zcache
python3 webui.py --model /tmp/zfull --preload --compile-process on --port $port --outputs /tmp/zout --cache-dir /tmp/zcache --compile auto --idle-unload 0 --idle-drop 0 > $OUT/server.log 2>&1 &
pid=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:$port/health > /dev/null && break; sleep 1; done
t0=$(date +%s)
curl -s -X POST http://127.0.0.1:$port/generate -H 'content-type: application/json' -d '{"prompt":"a cat","width":1024,"height":1024,"num_inference_steps":8,"seed":1}' -o /dev/null -w "first image http %{http_code} %{time_total}s\n"
while [ $(( $(date +%s) - t0 )) -lt $lim ]; do
  sleep 15
  h=$(curl -s http://127.0.0.1:$port/health | python3 -c "import sys,json; d=json.load(sys.stdin); print(list(d.get('startup',{}).items())[-3:])")
  echo "t+$(( $(date +%s) - t0 ))s $h"; ps -eo pid,ni,etimes,pcpu,rss,args | grep aot_compile | grep -v grep | cut -c1-120
  echo "$h" | grep -q -E "compiled blocks in use|compile failed" && break
done
curl -s -X POST http://127.0.0.1:$port/generate -H 'content-type: application/json' -d '{"prompt":"a dog","width":1024,"height":1024,"num_inference_steps":8,"seed":2}' | python3 -c "import sys,json; print('after:', json.load(sys.stdin).get('seconds_per_image'))"
kill $pid; sleep 2
for f in $(find /tmp/zcache -name "*.log" -path "*aot*"); do echo "== $f"; tail -c 4000 $f; cp $f $OUT/; done
grep -i -E "compil|aot|package" $OUT/server.log | tail -20 | cut -c1-300
