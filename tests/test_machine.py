"""factorized/runtime/machine.py: the machine class a run's float32 bits belong to."""

import json

import jax

from factorized.runtime import machine

FLAGS = ('flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 aes avx f16c hypervisor avx2 avx512f '
         'avx512dq avx512_vnni sha_ni\n')


def test_only_the_simd_features_of_the_first_flags_line_count():
  cpuinfo = 'processor\t: 0\n' + FLAGS + 'processor\t: 1\nflags\t\t: fpu avx512_bf16\n'
  assert machine.simd_features(cpuinfo) == [
      'avx', 'avx2', 'avx512_vnni', 'avx512dq', 'avx512f', 'f16c', 'fma', 'sse4_2']
  assert machine.simd_features('Features\t: fp asimd asimddp sve aes\n') == [
      'asimd', 'asimddp', 'sve']


def test_the_id_is_stable_and_tells_an_isa_cap_apart():
  description = {'arch': 'x86_64', 'simd': machine.simd_features(FLAGS),
                 'xla_cpu_max_isa': None, 'jaxlib': '0.10.2', 'backend': 'cpu',
                 'device_count': 8}
  first = machine.machine_id(description)
  assert first == machine.machine_id(dict(reversed(description.items())))
  assert first.startswith('x86_64-avx512-') and len(first.split('-')[-1]) == 8
  capped = machine.machine_id({**description, 'xla_cpu_max_isa': 'AVX2'})
  assert capped.startswith('x86_64-avx512-maxavx2-') and capped[-8:] != first[-8:]
  assert machine.machine_id({**description, 'device_count': 1}) != first
  assert machine.max_isa('--xla_cpu_max_isa=AVX --foo=1 --xla_cpu_max_isa=AVX2') == 'AVX2'
  assert machine.max_isa('--xla_force_host_platform_device_count=8') is None


def test_the_fingerprint_describes_this_process():
  machine_id, description = machine.fingerprint()
  assert machine_id == machine.machine_id(description)
  assert description['device_count'] == jax.device_count() == 8  # conftest.py
  assert json.loads(json.dumps(description)) == description  # written into pin files
