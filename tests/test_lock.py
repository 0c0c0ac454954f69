"""requirements.lock, the tested versions: what the README's set-up installs (pip -c)."""

import importlib.metadata
import pathlib
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_LOCKED = {'factorized', 'pip', 'setuptools', 'wheel'}  # the project, and pip's own


def locked() -> dict[str, str]:
  pins = {}
  for line in (ROOT / 'requirements.lock').read_text().splitlines():
    if line.strip() and not line.startswith('#'):
      name, _, version = line.partition('==')
      pins[canonicalize_name(name)] = version.strip()
  return pins


def test_the_lock_is_exactly_this_environment():
  # CI builds its venv with the README's set-up (requirements.txt constrained by the lock):
  # a package the lock lacks, or a version that differs, means the lock is stale; rerun
  # .ci/lock and commit it.
  installed = {canonicalize_name(dist.metadata['Name']): dist.version
               for dist in importlib.metadata.distributions()}
  installed = {name: v for name, v in installed.items() if name not in NOT_LOCKED}
  pins = locked()
  differ = {name: (pins.get(name), installed.get(name))
            for name in set(pins) | set(installed) if pins.get(name) != installed.get(name)}
  assert not differ, f'requirements.lock (locked, installed) differs: {differ}; run .ci/lock'


def test_the_lock_satisfies_the_compatible_ranges():
  pins = locked()
  for line in (ROOT / 'requirements.txt').read_text().splitlines():
    line = re.sub(r'\s+#.*', '', line).strip()
    if not line or line.startswith(('#', '-')):
      continue
    requirement = Requirement(line)
    name = canonicalize_name(requirement.name)
    assert name in pins, f'{name} is in requirements.txt but not in requirements.lock'
    assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])


def test_the_readme_set_up_installs_the_lock():
  setup = next(line for line in (ROOT / 'README.md').read_text().splitlines()
               if line.endswith('# set-up'))
  assert '-r requirements.txt' in setup and '-c requirements.lock' in setup, setup
