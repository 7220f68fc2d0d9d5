#!/usr/bin/env bash
# Where the engine's own time waits, by instruction: samples one direction of the engine suite
# with perf's cpu-clock timer (no hardware counters needed, so it works in a VM) and prints
#  1. the share of all samples in each engine function (self time; the bench's setup and the
#     AEAD ceiling run in the same process, so compare the engine's functions with each other);
#  2. for the TOP engine functions, each instruction holding more than MIN percent of that
#     function's samples, with the instructions before it.
# A timer sample lands on the oldest instruction not yet retired, so a stall shows on the
# instruction after the one that waited: a load that missed, or a load the processor could not
# forward from the stores before it (narrower stores read back wider, or a load across two
# stores: the pattern three commits of the twelfth session removed; bench/tools/stlf.py lists such
# copies on the stack). Read the lines before a hot instruction for its cause. Needs perf
# (apt-get install linux-perf).
#   bench/tools/profile.sh [BINARY] [SIZE] [SHAPE] [DIRECTION]
# e.g. TOP=4 MIN=3 bench/tools/profile.sh target/release/sluice-bench 64 1000x1000 net-client
set -euo pipefail
bin=${1:-target/release/sluice-bench}
size=${2:-64}
shape=${3:-1000x1000}
direction=${4:-net-client}
top=${TOP:-4}
min=${MIN:-3}
command -v perf >/dev/null || { echo "error: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
case $direction in
  client-net | net-client) ;;
  *) echo "error: DIRECTION is client-net or net-client" >&2; exit 1 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf record -q -e cpu-clock -F 20000 -o "$out/perf.data" \
  "$bin" engine --seconds 3 --sizes "$size" --shapes "$shape" --direction "$direction" \
  --json "$out/run.json" >/dev/null 2>"$out/run.log" || { cat "$out/run.log" >&2; exit 1; }
perf report -i "$out/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  >"$out/report.txt"
python3 - "$out" "$top" "$min" <<'PY'
import re, subprocess, sys
out, top, least = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ours = re.compile(r'^sluice_engine::(worker|pipeline|crypto|flow|session|neighbour|rules|packet)')
theirs = re.compile(r'aes_gcm|gcm_ghash|aes_hw_ctr32|CRYPTO_memcmp')
rows = []
for line in open(f'{out}/report.txt'):
    m = re.match(r'\s*([\d.]+)%\s+\[\.\]\s+(.*?)\s+-\s+-\s*$', line) or re.match(r'\s*([\d.]+)%\s+\[\.\]\s+(.*\S)', line)
    if m:
        rows.append((float(m.group(1)), m.group(2).strip()))
engine = [(p, s) for p, s in rows if ours.search(s)]
ring = sum(p for p, s in rows if theirs.search(s))
total = sum(p for p, _ in engine) + ring
print(f'engine functions {total - ring:.2f}% of all samples, ring AES-GCM {ring:.2f}% (ring also'
      ' runs the ceiling, measured first in the same process, and in client-net runs the'
      ' bench sealing client frames: compare engine functions with each other)')
for p, s in engine[:15]:
    print(f'  {p:6.2f}%  {s[:110]}')
for p, s in engine[:top]:
    text = subprocess.run(['perf', 'annotate', '-i', f'{out}/perf.data', '--stdio', '-s', s],
                          capture_output=True, text=True).stdout
    lines = [l for l in text.splitlines() if re.match(r'\s+[\d.]+ :', l)]
    print(f'\n== {s[:110]} ({p:.2f}% of all samples)')
    for i, l in enumerate(lines):
        if float(l.split(':')[0]) >= least:
            print('\n'.join(lines[max(0, i - 6):i + 1]))
            print('  --')
PY
