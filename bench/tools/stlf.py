#!/usr/bin/env python3
"""Stack copies the processor cannot forward, found in a build's disassembly.

A load whose bytes are not all inside the youngest single store to them (one wider than the
store, or across two stores) cannot take its data from the store buffer; it waits until the
stores reach L1. LLVM makes such copies when it moves a value through the stack piecewise and
reads it back whole (the twelfth session removed three from the per-packet path; see
bench/RESULTS.md). This lists, per function whose name contains one of the given strings,
each load from `N(%rsp)` that overlaps a store to the stack within the 24 instructions before
it (no call or unconditional jump between) and is not contained in the youngest store of
its bytes.

A heuristic, not a proof: it sees the stack only (copies through other pointers escape it),
one function at a time, in address order (a branch between store and load may mean they
never meet), and a flagged load only costs where it runs. Read the hits with
bench/tools/profile.sh, which shows where the time waits.

    bench/tools/stlf.py target/release/sluice-bench 'Worker<P>::process>' send_to_client
    bench/tools/stlf.py target/release/sluice-bench sluice_engine::     # every engine function
"""
import re
import subprocess
import sys

WINDOW = 24
WIDTHS = {'b': 1, 'w': 2, 'l': 4, 'q': 8}
REG64 = {'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp'}
REG16 = {'ax', 'bx', 'cx', 'dx', 'si', 'di', 'bp'}


def width(mnemonic, operands):
    """Bytes a move reads or writes, or None for what this does not model."""
    if mnemonic.startswith(('movdqu', 'movdqa', 'movups', 'movaps', 'vmovdqu', 'vmovups')):
        return 32 if '%ymm' in operands else 16
    if mnemonic in ('movq', 'movd') and '%xmm' in operands:
        return 8 if mnemonic == 'movq' else 4
    if mnemonic.startswith(('movzb', 'movsb')):
        return 1
    if mnemonic.startswith(('movzw', 'movsw')):
        return 2
    if mnemonic.startswith('mov') and len(mnemonic) == 4 and mnemonic[3] in WIDTHS:
        return WIDTHS[mnemonic[3]]
    if mnemonic == 'mov':
        for r in re.findall(r'%(\w+)', operands):
            if r == 'rsp':
                continue
            if r in REG64 or re.fullmatch(r'r\d+', r):
                return 8
            if re.fullmatch(r'r\d+d', r) or r.startswith('e'):
                return 4
            if re.fullmatch(r'r\d+w', r) or r in REG16:
                return 2
            if re.fullmatch(r'r\d+b', r) or r.endswith('l'):
                return 1
    return None


def scan(lines):
    """Yields (address, instruction, overlapping stores) for each suspect load."""
    stores = []  # (index, offset, width), oldest first
    for i, line in enumerate(lines):
        m = re.match(r'\s*([0-9a-f]+):\s+(\S+)\s*(.*)', line)
        if not m:
            continue
        address, mnemonic, operands = m.groups()
        if mnemonic.startswith('call') or mnemonic in ('jmp', 'ret'):
            stores = []
            continue
        stores = [s for s in stores if i - s[0] <= WINDOW]
        m = re.search(r'(-?0x[0-9a-f]+|)\(%rsp\)', operands)
        n = width(mnemonic, operands) if m else None
        if n is None:
            continue
        offset = int(m.group(1), 16) if m.group(1) else 0
        if '(%rsp)' in operands.split(',')[-1]:
            stores.append((i, offset, n))
            continue
        overlapping = [s for s in stores if s[1] < offset + n and offset < s[1] + s[2]]
        if not overlapping:
            continue
        youngest = set()
        for byte in range(offset, offset + n):
            covering = [s for s in stores if s[1] <= byte < s[1] + s[2]]
            youngest.add(covering[-1] if covering else None)
        (only,) = youngest if len(youngest) == 1 else (None,)
        if only is None or not (only[1] <= offset and offset + n <= only[1] + only[2]):
            yield address, f'{mnemonic} {operands}', [(hex(s[1]), s[2]) for s in overlapping]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, wanted = sys.argv[1], sys.argv[2:]
    text = subprocess.run(['objdump', '-d', '--no-show-raw-insn', '-C', binary],
                          capture_output=True, text=True, check=True).stdout
    found = 0
    for block in re.split(r'\n(?=[0-9a-f]+ <)', text):
        head, _, body = block.partition('\n')
        if not any(w in head for w in wanted):
            continue
        hits = list(scan(body.split('\n')))
        if hits:
            print(head)
            for address, instruction, stores in hits:
                print(f'  {address}: {instruction}   <- stores (offset, bytes) {stores}')
            found += len(hits)
    print(f'{found} suspect loads')


if __name__ == '__main__':
    main()
