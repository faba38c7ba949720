#!/usr/bin/env bash
# Dependencies point down only: a file in src/X may include headers of X and of the modules X
# depends on (directly or transitively), as declared by sp_module() in CMakeLists.txt. Tools
# (tools/NAME: the benchmark client) are built on the layers, never the reverse: no file under
# src/ includes a header of tools/.
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
tools_dir = os.path.join(src, "tools")
tools = sorted(t for t in os.listdir(tools_dir) if os.path.isdir(os.path.join(tools_dir, t))) \
    if os.path.isdir(tools_dir) else []
def closure(m, seen=None):
    seen = seen if seen is not None else set()
    for d in deps.get(m, []):
        if d not in seen:
            seen.add(d)
            closure(d, seen)
    return seen
def includes(path):
    for n, line in enumerate(open(path), 1):
        m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if m:
            yield n, m.group(1)
bad = []
for mod in deps:
    allowed = closure(mod) | {mod}
    folder = os.path.join(src, "src", mod)
    if not os.path.isdir(folder):
        continue
    for f in sorted(os.listdir(folder)):
        if not f.endswith((".c", ".h")):
            continue
        for n, inc in includes(os.path.join(folder, f)):
            top = inc.split("/")[0]
            if re.fullmatch(r"\w+", top) and "/" in inc and top not in allowed | set(tools):
                bad.append(f"src/{mod}/{f}:{n}: includes {top}/, which {mod} may not use")
# Every file under src/, in a module or not: a tool's header by its include name
# ("loadgen/x.h"), by a path through tools/, or by climbing out of src/.
n_files = 0
for root, _, files in os.walk(os.path.join(src, "src")):
    for f in sorted(files):
        if not f.endswith((".c", ".h")):
            continue
        n_files += 1
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)
        for n, inc in includes(path):
            parts = inc.split("/")
            if parts[0] in tools or "tools" in parts or ".." in parts:
                bad.append(f"{rel}:{n}: includes {inc}: src/ may not include tools/ "
                           f"({', '.join(tools) or 'none'}) or reach out of src/")
for b in bad:
    print(b)
print(f"layering: {len(deps)} modules checked, {n_files} files of src/ against {len(tools)} "
      f"tools, {len(bad)} bad includes")
sys.exit(1 if bad else 0)
PY
