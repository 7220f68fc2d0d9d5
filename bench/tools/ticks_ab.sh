#!/usr/bin/env bash
# Compares builds by TSC ticks per packet, stage by stage, where wall-clock rates on a shared
# machine are too noisy: runs each binary in turn ROUNDS times (interleaved, so a busy moment
# hits all of them alike) and prints, per shape, size and direction, the median and lowest of
# each binary's best-chunk ticks per packet. The binaries must be built with the stage
# counters:
#   cargo build --release -p sluice-bench --features stage-cycles
#   cp target/release/sluice-bench /tmp/new     # and an older build as /tmp/old
#   bench/tools/ticks_ab.sh 5 /tmp/old /tmp/new
# SIZES and SHAPES (environment) narrow the cases; defaults: 64,1400 and the four shapes.
# EXTRA (environment) is appended to every run's options, e.g. EXTRA='--proto tcp' to compare
# TCP segments instead of UDP datagrams (the table's heading then says so).
# With --features aead-cycles each line also splits ring's AEAD calls from the rest; that split
# charges the calls' tail to the rest unless the builds also have aead-fenced (engine::stages).
set -euo pipefail
rounds=${1:?usage: ticks_ab.sh ROUNDS BINARY...}
shift
[ $# -ge 1 ] || { echo "usage: ticks_ab.sh ROUNDS BINARY..." >&2; exit 1; }
sizes=${SIZES:-64,1400}
shapes=${SHAPES:-1000x1000,100000x1000,1000x1000000,100000x1000000}
read -r -a extra <<< "${EXTRA:-}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  i=0
  for b in "$@"; do
    i=$((i + 1))
    "$b" engine --seconds 0.25 --sizes "$sizes" --shapes "$shapes" --json "$out/run.json" \
      ${extra[@]+"${extra[@]}"} 2> "$out/$i.$r.txt" >/dev/null
    grep -q 'ticks/packet' "$out/$i.$r.txt" ||
      { echo "error: $b printed no ticks (build it with --features stage-cycles)" >&2; exit 1; }
  done
done
[ -z "${EXTRA:-}" ] || echo "options: ${EXTRA}"
python3 - "$out" "$@" <<'PY'
import collections, glob, os, re, statistics, sys
out, bins = sys.argv[1], sys.argv[2:]
ticks = collections.defaultdict(list)
for f in glob.glob(os.path.join(out, '*.txt')):
    b = bins[int(os.path.basename(f).split('.')[0]) - 1]
    for line in open(f):
        m = re.search(r'ticks/packet (\S+) (\d+x\d+) (\d+) B: .*total (\d+)', line)
        if m:
            ticks[(m.group(2), int(m.group(3)), m.group(1), b)].append(int(m.group(4)))
for k in sorted(ticks, key=lambda k: (k[0], k[1], k[2], bins.index(k[3]))):
    v = ticks[k]
    print(f'{k[0]:<16} {k[1]:>5} B {k[2]:<12} {k[3]:<24} median {statistics.median(v):>6.0f}  lowest {min(v):>5}  runs {len(v)}')
PY
