#!/usr/bin/env bash
# Dependencies point down only: a file in src/X may include headers of X and of the modules X
# depends on (directly or transitively), as declared by sp_module() in CMakeLists.txt.
set -euo pipefail
src=${SP_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
/usr/bin/python3 - "$src" <<'PY'
import os, re, sys
src = sys.argv[1]
deps = {}
for line in open(os.path.join(src, "CMakeLists.txt")):
    m = re.match(r"\s*sp_module\((\w+)(.*)\)", line)
    if m:
        name, rest = m.group(1), m.group(2)
        d = re.search(r"DEPS\s+([\w\s]+?)(?:\s+LIBS|$)", rest)
        deps[name] = d.group(1).split() if d else []
def closure(m, seen=None):
    seen = seen if seen is not None else set()
    for d in deps.get(m, []):
        if d not in seen:
            seen.add(d)
            closure(d, seen)
    return seen
bad = []
for mod in deps:
    allowed = closure(mod) | {mod}
    folder = os.path.join(src, "src", mod)
    if not os.path.isdir(folder):
        continue
    for f in sorted(os.listdir(folder)):
        if not f.endswith((".c", ".h")):
            continue
        for n, line in enumerate(open(os.path.join(folder, f)), 1):
            m = re.match(r'\s*#\s*include\s+"(\w+)/', line)
            if m and m.group(1) not in allowed:
                bad.append(f"src/{mod}/{f}:{n}: includes {m.group(1)}/, which {mod} may not use")
for b in bad:
    print(b)
print(f"layering: {len(deps)} modules checked, {len(bad)} upward includes")
sys.exit(1 if bad else 0)
PY
