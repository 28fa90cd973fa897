"""The README's install block, run as written on this machine (helpers of test_colcon.py).

What stands in for what a vehicle has, and nothing else is changed in the block:
- `/opt/ros/<distro>`: a folder whose `setup.bash` sets what the real one sets (ROS_DISTRO,
  ROS_VERSION, ROS_PYTHON_VERSION, AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH, PYTHONPATH, LD_LIBRARY_PATH,
  PATH) for the ROS 2 prefix of this venv's PyPI wheels. Its `bin/` holds `ros2`, `rosdep` and `colcon`
  run by Debian's own `/usr/bin/python3` (PEP 668 "externally managed", as Ubuntu 24.04's is), the way
  apt's scripts run by the system Python. The block's `/opt/ros/` is the only text replaced.
- `sudo`: runs the command as this user; `apt`/`apt-get` are recorded, not run (no apt here);
  `rosdep init` is answered by ROSDEP_SOURCE_PATH pointing at the rosdistro snapshot's sources.
- `git clone <url> <dir>`: a copy of this checkout (no network).
- `rosdep install` gets `--simulate` (and `--os` for the distro's Ubuntu), so what it would install is
  printed, not installed.
- `hf download <id>`: the test's tiny random model put into the Hugging Face cache under that id.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO.parent / "shared" / "rosdistro"
UBUNTU = {"humble": "jammy", "jazzy": "noble", "kilted": "noble"}
INSTALL_MARK = "<!-- install-block -->"
SYSTEM_PYTHON = Path("/usr/bin/python3")
SHA = "0" * 40  # the snapshot revision of the cached tiny models


def readme_block(mark: str = INSTALL_MARK, readme: Path = REPO / "README.md") -> str:
    """The ```bash block right after `mark` in the README."""
    text = readme.read_text().split(mark, 1)[1]
    return re.match(r"\s*```bash\n(.*?)^```", text, re.S | re.M).group(1)


def for_distro(block: str, distro: str) -> str:
    """The block as a user of `distro` writes it: the README shows Jazzy and names the others."""
    lines = []
    for line in block.splitlines():
        code, sep, comment = line.partition("#")
        lines.append(re.sub(r"\bjazzy\b", distro, code) + sep + comment)
    return "\n".join(lines) + "\n"


def ros_prefix(root: Path, distro: str) -> Path:
    """`<root>/opt/ros/<distro>` standing in for a ROS install: this venv's wheels as the prefix."""
    venv = Path(sys.prefix)
    site = Path(next(p for p in sys.path if p.startswith(str(venv)) and p.endswith("site-packages")))
    libs = [venv / "lib", *sorted(p for p in site.glob("*.libs") if p.is_dir())]
    prefix = root / "opt" / "ros" / distro
    (prefix / "bin").mkdir(parents=True)
    for tool, main in (
        ("ros2", "from ros2cli.cli import main"),
        ("rosdep", "from rosdep2.main import rosdep_main as main"),
        ("colcon", "from colcon_core.command import main"),
    ):
        script = prefix / "bin" / tool
        script.write_text(f"#!{SYSTEM_PYTHON}\nimport sys\n{main}\nsys.exit(main())\n")
        script.chmod(0o755)
    (prefix / "setup.bash").write_text(
        f"# stand-in for /opt/ros/{distro}/setup.bash (the PyPI-wheel prefix {venv})\n"
        f"export ROS_DISTRO={distro} ROS_VERSION=2 ROS_PYTHON_VERSION=3\n"
        f'export AMENT_PREFIX_PATH="{venv}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}"\n'
        f'export CMAKE_PREFIX_PATH="{venv}${{CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}}"\n'
        f'export PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'export LD_LIBRARY_PATH="{":".join(map(str, libs))}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'export PATH="{prefix / "bin"}:$PATH"\n'
        # The wheels' .pth re-executes Python once with LD_LIBRARY_PATH set; done above already.
        "export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1\n"
    )
    return prefix


def rosdep_sources(root: Path, distros: Iterable[str] = tuple(UBUNTU)) -> dict[str, str]:
    """rosdep's sources and distribution index (`distros`): the rosdistro snapshot, read from files;
    the environment variables that point rosdep at them."""
    (root / "sources.list.d").mkdir()
    (root / "sources.list.d" / "20-default.list").write_text(
        "".join(f"yaml {(SNAPSHOT / 'rosdep' / f).as_uri()}\n" for f in ("base.yaml", "python.yaml"))
    )
    index = ["%YAML 1.1", "---", "distributions:"]
    for distro in distros:
        index += [
            f"  {distro}:",
            f"    distribution: [{(SNAPSHOT / distro / 'distribution.yaml').as_uri()}]",
            "    distribution_status: active",
            "    distribution_type: ros2",
            "    python_version: 3",
        ]
    (root / "index-v4.yaml").write_text("\n".join([*index, "type: index", "version: 4", ""]))
    return {
        "ROSDEP_SOURCE_PATH": str(root / "sources.list.d"),
        "ROSDISTRO_INDEX_URL": (root / "index-v4.yaml").as_uri(),
    }


def stand_ins(distro: str, log: Path, models: dict[str, Path], hub: Path) -> str:
    """bash functions defined before the block (see the module docstring)."""
    skip = ("./.git", "./.venv", "./.venv-jazzy", "__pycache__", "*.egg-info")
    copy = f"tar -C {shlex.quote(str(REPO))} {' '.join(f'--exclude={p}' for p in skip)} -cf - ."
    cached = "\n".join(
        f"      {shlex.quote(repo)}) src={shlex.quote(str(path))} ;;" for repo, path in models.items()
    )
    return rf"""
sudo() {{ "$@"; }}
apt() {{ echo "apt $*" >> {shlex.quote(str(log))}; }}
apt-get() {{ echo "apt-get $*" >> {shlex.quote(str(log))}; }}
rosdep() {{
  case "$1" in
    init) echo "rosdep init: the snapshot's sources ($ROSDEP_SOURCE_PATH)" >> {shlex.quote(str(log))} ;;
    install) command rosdep "$@" --simulate --os ubuntu:{UBUNTU[distro]} | tee -a {shlex.quote(str(log))};
             return "${{PIPESTATUS[0]}}" ;;
    *) command rosdep "$@" ;;
  esac
}}
git() {{
  if [ "$1" = clone ]; then mkdir -p "$3" && {copy} | tar -C "$3" -xf -;
  else command git "$@"; fi
}}
hf() {{
  [ "$1" = download ] || {{ echo "hf stand-in: only 'download'" >&2; return 2; }}
  local src
  case "$2" in
{cached}
      *) echo "hf stand-in: no tiny model for $2" >&2; return 1 ;;
  esac
  local repo={shlex.quote(str(hub))}/models--${{2//\//--}}
  mkdir -p "$repo/snapshots" "$repo/refs" && cp -r "$src" "$repo/snapshots/{SHA}"
  printf %s {SHA} > "$repo/refs/main"  # no newline: the hub reads the revision verbatim
}}
"""


def clean_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A login shell's environment: no venv, no ROS, only the system's PATH."""
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TERM", "ROS_DOMAIN_ID")}
    return {
        **keep,
        "HOME": str(home),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PIP_NO_INDEX": "1",  # no network here: what the block installs must already be satisfied
        **extra,
    }


def have_system_python() -> bool:
    """Debian's python3 with venv, of this venv's minor version (the wheels' ABI)."""
    if not SYSTEM_PYTHON.is_file() or not shutil.which("cmake"):
        return False
    import subprocess

    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys, venv, ensurepip; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out == str(tuple(sys.version_info[:2]))
