#!/usr/bin/env bash
# Instructions per packet of the engine pipeline, counted by callgrind: deterministic where
# wall-clock rates on a shared machine are not. Runs the engine suite on one shape and size
# under valgrind, counting only inside Worker::poll_once, and prints per packet: everything,
# and everything but ring's AEAD (open_within, aes_gcm_seal) and the session and flow setup
# that also runs inside poll_once. Needs valgrind (apt-get install valgrind).
#   bench/tools/instructions.sh [BINARY] [SIZE] [SHAPE]
set -euo pipefail
bin=${1:-target/release/sluice-bench}
size=${2:-64}
shape=${3:-1000x1000}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/cg" --toggle-collect='*poll_once*' \
  "$bin" engine --seconds 0.5 --sizes "$size" --shapes "$shape" --json "$out/run.json" \
  >/dev/null 2>"$out/valgrind.log" || { cat "$out/valgrind.log" >&2; exit 1; }
python3 - "$out/cg" <<'PY'
import collections, re, sys

names, calls, incl = {}, collections.Counter(), collections.Counter()
cfn, pending, total = None, None, 0
for line in open(sys.argv[1]):
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
    if m:
        kind, i, name = m.groups()
        if name:
            names[i] = name.strip()
        if kind == 'cfn':
            cfn = i
        continue
    m = re.match(r'calls=(\d+)', line)
    if m:
        pending = int(m.group(1))
        continue
    if pending is not None:
        cost = line.split()
        if len(cost) >= 2:
            calls[cfn] += pending
            incl[cfn] += int(cost[1])
        pending = None
        continue
    m = re.match(r'(?:summary|totals): (\d+)', line)
    if m:
        total = int(m.group(1))

def callee(pattern):
    ids = [i for i in calls if re.search(pattern, names.get(i, ''))]
    return sum(calls[i] for i in ids), sum(incl[i] for i in ids)

packets = callee(r'::client_data')[0] + callee(r'::encrypt_to_client')[0]
aead = callee(r'Algorithm::open_within')[1] + callee(r'aes_gcm_seal')[1]
setup = sum(callee(p)[1] for p in (r'DataKey::new', r'SessionTable::insert', r'FlowTable::create'))
if packets == 0:
    sys.exit('no packets counted (were client_data/encrypt_to_client inlined?)')
print(f'packets {packets}')
print(f'instructions per packet, all but setup: {(total - setup) / packets:.0f}')
print(f'instructions per packet, without AEAD and setup: {(total - aead - setup) / packets:.0f}')
PY
