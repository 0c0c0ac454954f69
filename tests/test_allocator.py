"""Tests of factorized/runtime/allocator.py: when it re-execs, that it does so once."""

import os
import subprocess
import sys

import pytest

from factorized.runtime import allocator

pytestmark = pytest.mark.skipif(
    allocator.glibc_version() is None, reason='the fast malloc needs Linux with glibc')

SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
print('start', os.getpid(), flush=True)
from factorized.runtime import allocator
allocator.ensure_fast_malloc()
print('after', os.getpid(), os.environ.get('GLIBC_TUNABLES', '-'), sys.argv[1:],
      allocator.fast_malloc_active(), flush=True)
"""


def run_script(repo_root, tmp_path, **env_overrides) -> list[list[str]]:
  """Runs SCRIPT with args 'a b' under os.environ (without malloc settings) + overrides."""
  script = tmp_path / 'script.py'
  script.write_text(SCRIPT.format(repo=str(repo_root)))
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', allocator.ENV_SWITCH, allocator.ENV_APPLIED)}
  env.update(env_overrides)
  out = subprocess.run([sys.executable, str(script), 'a', 'b'], env=env, check=True,
                       capture_output=True, text=True).stdout
  return [line.split(' ', 1) for line in out.splitlines()]


def test_reexecs_once_with_the_tunables_same_pid_and_argv(repo_root, tmp_path):
  lines = run_script(repo_root, tmp_path)
  # The code before the call runs twice (before and after the exec), in one process.
  assert [kind for kind, _ in lines] == ['start', 'start', 'after']
  pid = lines[0][1]
  assert lines[1][1] == pid
  assert lines[2][1] == f"{pid} {allocator.TUNABLES} ['a', 'b'] True"


@pytest.mark.parametrize('value', ['0', 'false', 'OFF', 'no'])
def test_the_switch_turns_it_off(repo_root, tmp_path, value):
  lines = run_script(repo_root, tmp_path, FACTORIZED_FAST_MALLOC=value)
  assert [kind for kind, _ in lines] == ['start', 'after']
  assert lines[1][1].endswith("- ['a', 'b'] False")


def test_a_users_own_setting_wins(repo_root, tmp_path):
  lines = run_script(repo_root, tmp_path, GLIBC_TUNABLES='glibc.malloc.arena_max=2')
  assert [kind for kind, _ in lines] == ['start', 'after']
  assert 'glibc.malloc.arena_max=2' in lines[1][1]


def test_plan_reasons():
  base = {}
  assert allocator.fast_malloc_plan(base) is None
  assert 'disabled' in allocator.fast_malloc_plan({allocator.ENV_SWITCH: '0'})
  assert allocator.fast_malloc_plan({allocator.ENV_SWITCH: '1'}) is None
  assert allocator.fast_malloc_plan({allocator.ENV_APPLIED: '1'}) == 'already applied'
  assert 'user' in allocator.fast_malloc_plan({'LD_PRELOAD': '/x/libmimalloc.so'})


def test_glibc_parses_the_tunables():
  """ld.so reports the values it would apply (a typo in a tunable name is silently ignored)."""
  loader = '/lib64/ld-linux-x86-64.so.2'
  if not os.path.exists(loader):
    pytest.skip(f'{loader} not found')
  out = subprocess.run([loader, '--list-tunables'], capture_output=True, text=True,
                       env={'GLIBC_TUNABLES': allocator.TUNABLES}).stdout
  values = dict(line.split(': ', 1) for line in out.splitlines() if ': ' in line)
  assert values['glibc.malloc.arena_max'].startswith('0x1 ')
  assert values['glibc.malloc.mmap_max'].startswith('0 ')
  assert values['glibc.malloc.trim_threshold'].startswith('0x10000000000 ')
  assert values['glibc.malloc.top_pad'].startswith('0x10000000 ')
