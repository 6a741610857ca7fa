"""Time README.md's tour step by step on a fresh clone: wall time and CPU time (user + sys) of each numbered step.

    python benchmarks/readme_tour.py                 # clones this repository into a temporary folder and runs the tour there

The clone uses the Python environment this runs in (install the project first); ``../shared`` next to the clone points
at this repository's ``../shared`` (or ``SOWMETA_SHARED``); caches and the local registry start empty, as a new user's
do. Prints one line per step and ``RESULT`` lines; ``uptime`` before and after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tour_steps(readme: str) -> list[tuple[str, str]]:
    """(title, shell commands) per numbered step of the README's tour block; step 0 is what comes before step 1."""
    block = readme.split("## Five-minute tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    steps: list[tuple[str, list[str]]] = [("unzip", [])]
    for line in block.splitlines():
        numbered = re.match(r"# (\d+)\. ([^:(]*)", line)
        if numbered:
            steps.append((f"{numbered.group(1)}. {numbered.group(2).strip()}", []))
        elif line.strip() and not line.lstrip().startswith("#"):
            steps[-1][1].append(line.split("  #")[0].strip())
    return [(title, "; ".join(cmds)) for title, cmds in steps if cmds]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    shared = Path(os.environ.get("SOWMETA_SHARED", ROOT.parent / "shared")).resolve()
    with tempfile.TemporaryDirectory(prefix="sowmeta-tour-") as tmp:
        base = Path(tmp)
        clone = base / "tour"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        (base / "shared").symlink_to(shared)
        home = base / "home"
        env = {**os.environ, "SOWMETA_CACHE": str(home / "cache"), "SOWMETA_REGISTRY": str(home / "registry"),
               "HF_HOME": str(home / "hf"), "TORCH_HOME": str(home / "torch"), "PYTHONPATH": str(clone)}
        env.pop("HF_HUB_CACHE", None)
        print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
        script, total_wall, total_cpu = "set -e; ", 0.0, 0.0
        for title, commands in tour_steps((clone / "README.md").read_text(encoding="utf-8")):
            script += commands + "; "
            before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            # each step runs the script so far in one shell, re-running nothing: earlier steps' variables are kept
            subprocess.run(["bash", "-c", f"set -e; {_variables(script)} {commands}"], cwd=clone, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            total_wall, total_cpu = total_wall + wall, total_cpu + cpu
            print(f"{title:<40} {wall:8.1f} s wall {cpu:8.1f} s CPU", flush=True)
        print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        print(f"RESULT tour_wall_s={total_wall:.0f} tour_cpu_s={total_cpu:.0f}")


def _variables(script: str) -> str:
    """The shell variable assignments of the steps so far (W=...), so a later step can use them."""
    return " ".join(f"{m.group(0)};" for m in re.finditer(r"(?<![\w$])[A-Z]\w*=[^\s;]+", script))


if __name__ == "__main__":
    sys.exit(main())
