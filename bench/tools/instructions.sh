#!/usr/bin/env bash
# Instructions per packet of the engine pipeline, counted by callgrind: deterministic where
# wall-clock rates on a shared machine are not. Runs the engine suite on one shape and size
# under valgrind, counting only inside Worker::poll_once, and prints per packet: everything,
# and everything but ring's AEAD (aes_gcm_open, aes_gcm_seal) and the session and flow setup
# that also runs inside poll_once. Needs valgrind (apt-get install valgrind).
#   bench/tools/instructions.sh [BINARY] [SIZE] [SHAPE] [DIRECTION]
# DIRECTION: both (the default: one run, both directions averaged), client-net or net-client
# (that direction alone: `sluice-bench engine --direction`). With one direction and
# BY_FUNCTION=N in the environment, it also prints the N call paths inside the engine that
# run the most of those instructions (outermost engine frames first, inlined frames included:
# addr2line on the build's line tables; where LLVM merged code of two places, their lines blur,
# so read a small figure under an unlikely name with care), e.g.
#   BY_FUNCTION=25 bench/tools/instructions.sh target/release/sluice-bench 64 1000x1000 net-client
set -euo pipefail
bin=${1:-target/release/sluice-bench}
size=${2:-64}
shape=${3:-1000x1000}
direction=${4:-both}
depth=${DEPTH:-2}
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
case $direction in
  both | client-net | net-client) ;;
  *) echo "error: DIRECTION is both, client-net or net-client" >&2; exit 1 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
dump=()
[ -n "${BY_FUNCTION:-}" ] && dump=(--dump-instr=yes)
valgrind --tool=callgrind "${dump[@]}" --callgrind-out-file="$out/cg" --toggle-collect='*poll_once*' \
  "$bin" engine --seconds 0.5 --sizes "$size" --shapes "$shape" --direction "$direction" \
  --json "$out/run.json" >/dev/null 2>"$out/valgrind.log" || { cat "$out/valgrind.log" >&2; exit 1; }
python3 - "$out/cg" "$direction" "$bin" "${BY_FUNCTION:-0}" "$depth" <<'PY'
import collections, re, subprocess, sys

path, direction, binary, top, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def number(t):
    # Callgrind's numbers: hex with a 0x prefix, else decimal (either may carry a sign).
    return int(t, 16) if t.lstrip('+-').startswith('0x') else int(t, 10)
names, objs = {}, {}
calls, incl = collections.Counter(), collections.Counter()
self_at, fn_at = collections.Counter(), {}
fn = cfn = obj = None
pending = None
last = 0
total = 0
for line in open(path):
    m = re.match(r'(c?)ob=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(3):
            objs[m.group(2)] = m.group(3).strip()
        if not m.group(1):
            obj = objs.get(m.group(2), '')
        continue
    m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
    if m:
        kind, i, name = m.groups()
        if name:
            names[i] = name.strip()
        if kind == 'cfn':
            cfn = i
        else:
            fn = i
        continue
    m = re.match(r'calls=(\d+)', line)
    if m:
        pending = int(m.group(1))
        continue
    m = re.match(r'(?:summary|totals): (\d+)', line)
    if m:
        total = int(m.group(1))
        continue
    if not line or line[0] not in '0123456789+-*':
        continue
    cost = line.split()
    if top:
        # --dump-instr: the first position is the instruction's address: absolute, relative
        # to the previous one, or `*`, the same. Callgrind writes numbers as its format
        # defines them: hex with a 0x prefix, decimal without (its relative offsets).
        a = cost[0]
        if a == '*':
            addr = last
        elif a[0] in '+-':
            addr = last + number(a)
        else:
            addr = number(a)
        last = addr
        value = int(cost[2]) if len(cost) > 2 else 0
    else:
        value = int(cost[1]) if len(cost) > 1 else 0
    if pending is not None:
        calls[cfn] += pending
        incl[cfn] += value
        pending = None
    elif top and obj and obj.split('/')[-1] == binary.split('/')[-1]:
        self_at[addr] += value
        fn_at[addr] = fn

def callee(pattern):
    ids = [i for i in calls if re.search(pattern, names.get(i, ''))]
    return sum(calls[i] for i in ids), sum(incl[i] for i in ids)

# A packet is one call of ring's AES-GCM (an open client->net, a seal net->client): ring
# calls them through a function pointer, so they stay calls whatever LLVM inlines of ours and
# of ring's wrappers around them (open_within is inlined in some builds).
gcm = (r'aead::algorithm::aes_gcm_open$', r'aead::algorithm::aes_gcm_seal$')
packets = sum(callee(p)[0] for p in gcm)
aead = sum(callee(p)[1] for p in gcm)
setup_fns = (r'DataKey::new', r'SessionTable::insert', r'FlowTable::create')
setup = sum(callee(p)[1] for p in setup_fns)
if packets == 0:
    sys.exit('no packets counted (no calls of ring\'s aes_gcm_open or aes_gcm_seal)')
label = {'both': 'both directions averaged', 'client-net': 'client->net', 'net-client': 'net->client'}[direction]
print(f'{label}: packets {packets}')
print(f'instructions per packet, all but setup: {(total - setup) / packets:.0f}')
print(f'instructions per packet, without AEAD and setup: {(total - aead - setup) / packets:.0f}')
if not top:
    sys.exit(0)
if direction == 'both':
    sys.exit('BY_FUNCTION needs one direction')
# Each instruction of the binary itself (not ring's assembly, not libc) outside ring's Rust,
# the setup and the allocator, charged to its chain of engine frames (inlined ones included).
skip = re.compile(r'ring::|ring_core|DataKey::new|SessionTable::insert|FlowTable::create|alloc::raw_vec|malloc|free')
addrs = sorted(a for a in self_at if not skip.search(names.get(fn_at[a], '')))
lines = subprocess.run(['addr2line', '-a', '-i', '-f', '-C', '-e', binary] + [hex(a) for a in addrs],
                       capture_output=True, text=True, check=True).stdout.splitlines()
paths = collections.Counter()
i, cur, frames = 0, None, {}
while i < len(lines):
    if re.fullmatch(r'0x[0-9a-f]+', lines[i]):
        cur = int(lines[i], 16)
        frames[cur] = []
        i += 1
        continue
    frames[cur].append((lines[i], lines[i + 1] if i + 1 < len(lines) else ''))
    i += 2
for a in addrs:
    engine = [f.split('::')[-1] for f, loc in frames.get(a, []) if 'engine/src/' in loc][::-1]
    paths[' > '.join(engine[:depth]) or '(outside the engine)'] += self_at[a]
shown = sum(paths.values())
print(f'of which the binary\'s own code outside ring, by engine call path ({shown / packets:.0f} a packet):')
for p, c in paths.most_common(top):
    print(f'{c / packets:8.1f}  {p}')
PY
