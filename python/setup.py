"""Builds libswitchyard.so with cargo and ships it inside the package.

The Rust workspace is found at SWITCHYARD_SOURCE, else next to this directory
(a checkout: python/ sits in the workspace), else in ./rust (an sdist: `sdist`
copies the workspace there, so a wheel builds from the sdist alone).

Environment:
  SWITCHYARD_CARGO_PROFILE  cargo profile to build (default "release"; the
                            tests use "dev" to reuse the workspace's debug build)
  CARGO_TARGET_DIR          honoured, as cargo does
  CARGO                     the cargo to run (default: cargo on PATH)
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "libswitchyard.so"
# What a wheel build needs of the workspace (every member and every file a
# manifest names: benches and examples are declared in Cargo.toml).
WORKSPACE_PARTS = ["Cargo.toml", "Cargo.lock", "src", "ffi", "vendor", "loom-tests", "testserver",
                   "benches", "examples", "include", "LICENSE"]


def workspace():
    for root in (os.environ.get("SWITCHYARD_SOURCE"), os.path.join(HERE, "rust"),
                 os.path.dirname(HERE)):
        if root and os.path.isfile(os.path.join(root, "ffi", "Cargo.toml")):
            return root
    raise RuntimeError(
        "switchyard: the Rust workspace was not found (expected python/ inside a "
        "switchyard checkout, ./rust in an sdist, or SWITCHYARD_SOURCE)"
    )


def build_library():
    root = workspace()
    profile = os.environ.get("SWITCHYARD_CARGO_PROFILE", "release")
    cargo = os.environ.get("CARGO", "cargo")
    if shutil.which(cargo) is None:
        raise RuntimeError("switchyard: cargo not found; install Rust (https://rustup.rs)")
    # The C library's package by its manifest, not its name (names may change).
    cmd = [cargo, "build", "--locked", "--profile", profile,
           "--manifest-path", os.path.join(root, "ffi", "Cargo.toml")]
    print("switchyard: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
    if not os.path.isabs(target):
        target = os.path.join(root, target)
    out_dir = "debug" if profile == "dev" else profile
    return os.path.join(target, out_dir, LIBRARY)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib = build_library()
        dest = os.path.join(self.build_lib, "switchyard", LIBRARY)
        self.mkpath(os.path.dirname(dest))
        self.copy_file(lib, dest)


class SdistWithWorkspace(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = os.path.dirname(HERE)
        if not os.path.isfile(os.path.join(root, "ffi", "Cargo.toml")):
            return  # an sdist rebuilt from an sdist already has ./rust
        ignore = shutil.ignore_patterns("target", ".git", "__pycache__")
        for part in WORKSPACE_PARTS:
            src = os.path.join(root, part)
            dst = os.path.join(base_dir, "rust", part)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=ignore)
            elif os.path.isfile(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(src, dst)


class PlatformWheel(bdist_wheel):
    """The wheel carries a native library, so it is for this platform only;
    the Python side is plain ctypes, so any Python 3 (py3-none-PLATFORM)."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    cmdclass={"build_py": BuildPyWithLibrary, "sdist": SdistWithWorkspace,
              "bdist_wheel": PlatformWheel},
)
