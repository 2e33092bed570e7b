"""Build hook: the wheel carries the migrations inside the package.

`sql/` at the top of the repository stays the one source of the migrations; a build copies its
`*.sql` files to `edgenode/sql/` in the wheel, where `edgenode.migrations` finds them through
importlib.resources. An editable install has no such copy and reads `sql/` from the checkout.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, "edgenode", "sql")
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(Path(__file__).resolve().parent.joinpath("sql").glob("*.sql")):
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithMigrations})
