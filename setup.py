"""Packaging: the application layer installs under featpipe's name.

In the repository ``cli.py``, ``demo.py`` and ``heads/`` sit at the top, beside ``featpipe/`` (the
layout in docs/architecture.md); installed, they are ``featpipe.cli``, ``featpipe.demo`` and
``featpipe.heads``, so that no generic top-level ``cli`` or ``heads`` lands in site-packages.
``heads/`` is mapped with ``package_dir``; single modules cannot be placed inside a package that
way, so ``build_py`` copies ``cli.py`` and ``demo.py`` to ``featpipe/`` in the wheel (MANIFEST.in
puts them in the sdist). In a source checkout
(editable install, or PYTHONPATH) ``featpipe/__init__.py`` adds the repository root to the
package's path, which gives the same names. Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

APP_MODULES = ("cli.py", "demo.py")  # top-level modules of the repository installed inside featpipe/


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads them in place
            for name in APP_MODULES:
                self.copy_file(name, str(Path(self.build_lib, "featpipe", name)))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [] if self.editable_mode else [str(Path(self.build_lib, "featpipe", n)) for n in APP_MODULES]
        return super().get_outputs(include_bytecode) + extra


setup(
    packages=find_packages(include=["featpipe", "featpipe.*"]) + ["featpipe.heads"],
    package_dir={"featpipe.heads": "heads"},
    cmdclass={"build_py": BuildPy},
)
