"""The compose images from uv.lock, buildable with no package registry reachable.

- `build_wheelhouse(dir)`: every locked wheel of the node and coordinator extras in one folder,
  with `requirements-node.txt` / `requirements-coordinator.txt` (the locked sets, markers kept)
  and the project's own wheel. Dependency wheels are fetched once per uv.lock (a stamp file);
  the project wheel is rebuilt every time (it is the code).
- `build_base_image(docker, tag)`: a Debian 12 root made with `debootstrap --variant=minbase`
  and `docker import`: Python 3.11, venv, libgomp1, redis-server and postgresql, no registry.
- `build_images(docker, wheelhouse, base)`: node, coordinator and PostgreSQL images with the
  build's network switched off (`--network none`): everything comes from the wheelhouse.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from deploy.compose.docker import Docker

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
EXTRAS = ("node", "coordinator")
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
DEFAULT_POSTGRES_BASE_IMAGE = "debian:bookworm-slim"
LOCAL_BASE_IMAGE = "partyline-base:bookworm"
LOCAL_POSTGRES_BASE_IMAGE = "partyline-pgbase:bookworm"
BASE_PACKAGES = {  # what each debootstrap base carries (PostgreSQL alone: it pulls in LLVM)
    LOCAL_BASE_IMAGE: ("python3", "python3-venv", "ca-certificates", "libgomp1", "redis-server"),
    LOCAL_POSTGRES_BASE_IMAGE: ("postgresql",),
}
DEBOOTSTRAP_CACHE = Path("/var/cache/partyline-debootstrap")
IMAGE_TAG = os.environ.get("PARTYLINE_IMAGE_TAG", "dev")
IMAGES = {  # name → (Dockerfile, tag)
    "node": ("Dockerfile.node", f"partyline-node:{IMAGE_TAG}"),
    "coordinator": ("Dockerfile.coordinator", f"partyline-coordinator:{IMAGE_TAG}"),
    "postgres": ("Dockerfile.postgres", f"partyline-postgres:{IMAGE_TAG}"),
}

Log = Callable[[str], None]


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    if not Path(found).exists():
        raise RuntimeError("uv is not installed (make uv)")
    return found


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} … failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return done


def lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("uv.lock", "pyproject.toml"):
        h.update((REPO_ROOT / name).read_bytes())
    return h.hexdigest()


def _pip_wheel_cmd() -> list[str]:
    py = shutil.which("python3")
    if py and subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [py, "-m", "pip", "wheel"]
    return [_uv(), "tool", "run", "--from", "pip", "pip", "wheel"]


def build_wheelhouse(out: Path, *, log: Log = print) -> Path:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / ".uv-lock-sha256"
    digest = lock_digest()
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        log(f"wheelhouse: fetching every locked wheel of {', '.join(EXTRAS)} into {out}")
        for extra in EXTRAS:
            req = run(
                [
                    _uv(),
                    "export",
                    "--frozen",
                    "--extra",
                    extra,
                    "--no-emit-project",
                    "--no-hashes",
                    "--format",
                    "requirements-txt",
                    "--quiet",
                ],
                cwd=REPO_ROOT,
            ).stdout
            (out / f"requirements-{extra}.txt").write_text(req)
        # the union without markers: the lock only resolves for linux x86_64, and a marker on
        # the Python patch version (async-timeout < 3.11.3) must not drop a wheel the target needs
        names = set()
        for extra in EXTRAS:
            for line in (out / f"requirements-{extra}.txt").read_text().splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "-")):
                    names.add(line.split(";")[0].strip())
        wanted = out / ".all-requirements.txt"
        wanted.write_text("\n".join(sorted(names)) + "\n")
        run([*_pip_wheel_cmd(), "--no-deps", "--quiet", "-r", str(wanted), "-w", str(out)])
        stamp.write_text(digest + "\n")
    for old in out.glob("partyline-*.whl"):
        old.unlink()
    run([_uv(), "build", "--wheel", "--quiet", "-o", str(out)], cwd=REPO_ROOT)
    write_wheel_lists(out)
    wheels = list(out.glob("*.whl"))
    log(f"wheelhouse: {len(wheels)} wheels, {_size(out) / 1e6:.0f} MB in {out}")
    return out


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_wheel_lists(wheelhouse: Path) -> None:
    """`wheels-<extra>.txt`: the wheel files of each extra's locked set, so a host is sent only
    the wheels it installs (the Ansible role copies these)."""
    by_name = {_dist_name(w.name.split("-")[0]): w.name for w in wheelhouse.glob("*.whl")}
    for extra in EXTRAS:
        names = []
        for line in (wheelhouse / f"requirements-{extra}.txt").read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "-")):
                req = _dist_name(re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0])
                if req not in by_name:
                    raise RuntimeError(
                        f"{wheelhouse}: no wheel for {req} (requirements-{extra}.txt)"
                    )
                names.append(by_name[req])
        (wheelhouse / f"wheels-{extra}.txt").write_text("\n".join(sorted(set(names))) + "\n")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def debootstrap(root: Path, packages: tuple[str, ...]) -> Path:
    """A Debian 12 minbase root with `packages`, its .debs cached across runs."""
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    DEBOOTSTRAP_CACHE.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={DEBOOTSTRAP_CACHE}",
            "bookworm",
            str(root),
            "http://deb.debian.org/debian",
        ]
    )
    return root


def import_root(docker: Docker, root: Path, tag: str, change: str) -> None:
    """`tar` the root into `docker import` (no registry, no Dockerfile)."""
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    docker.run(["import", "--change", change, "-", tag], stdin=tar.stdout)
    if tar.wait() != 0:
        raise RuntimeError("tar of the debootstrap root failed")


def build_base_image(docker: Docker, tag: str = LOCAL_BASE_IMAGE, *, log: Log = print) -> str:
    """Debian 12 minbase (+ Python 3.11 or PostgreSQL) imported as an image: no image registry."""
    if docker.image_exists(tag):
        return tag
    packages = BASE_PACKAGES[tag]
    log(f"base image: debootstrap bookworm ({', '.join(packages)}) → {tag}")
    with tempfile.TemporaryDirectory(prefix="partyline-rootfs-") as tmp:
        root = debootstrap(Path(tmp) / "root", packages)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        import_root(docker, root, tag, 'CMD ["/bin/bash"]')
    return tag


def make_context(wheelhouse: Path, ctx: Path) -> Path:
    """wheelhouse/ (dependency wheels + requirements), project/ (our wheel), and the scripts.

    Hard links when the wheelhouse is on the same file system, so this costs nothing."""
    if ctx.exists():
        shutil.rmtree(ctx)
    (ctx / "wheelhouse").mkdir(parents=True)
    (ctx / "project").mkdir()
    for f in Path(wheelhouse).iterdir():
        if not f.is_file() or f.name.startswith("."):
            continue
        dest = ctx / ("project" if f.name.startswith("partyline-") else "wheelhouse") / f.name
        try:
            os.link(f, dest)
        except OSError:
            shutil.copy2(f, dest)
    for f in ("gateway.py", "postgres-entrypoint.sh"):
        shutil.copy2(HERE / f, ctx / f)
    return ctx


def build_images(
    docker: Docker,
    wheelhouse: Path,
    *,
    base_image: str,
    postgres_base_image: str,
    ctx: Path,
    offline: bool = True,
    only: tuple[str, ...] = tuple(IMAGES),
    log: Log = print,
) -> dict[str, str]:
    make_context(wheelhouse, ctx)
    built = {}
    for name in only:
        dockerfile, tag = IMAGES[name]
        base = postgres_base_image if name == "postgres" else base_image
        log(f"building {tag} from {base}" + (" with no network" if offline else ""))
        args = [
            "build",
            "--quiet",
            "-f",
            str(HERE / dockerfile),
            "-t",
            tag,
            "--build-arg",
            f"BASE_IMAGE={base}",
        ]
        if offline:
            args += ["--network", "none"]
        docker.run([*args, str(ctx)], timeout=1800)
        built[name] = tag
    return built


def image_sizes(docker: Docker, tags: dict[str, str]) -> dict[str, int]:
    return {name: docker.image_size(tag) for name, tag in tags.items()}
