r"""Train-step throughput, MFU and memory of each embedding kind and rank, in one process.

For each vocabulary size (--vocab_sizes, default --vocab_size), for dense and for each
kind x rank, any of factorized.embeddings.KINDS (and, with --reference, the plain-JAX step
of reference_step.py at the dense shape), this builds the project's own jitted train step
(factorized.train.step.make_train_step, shard_map over the ('data',) mesh) and eval step on a
synthetic batch (no corpus needed), then times them. Configurations are interleaved:
each of --rounds rounds runs every configuration for --steps/--rounds steps, after a
measurement of the peak (large jitted matmuls in the compute dtype), so that load from
other processes falls on all of them alike. Reported per row:
  step_ms_median/min/max   compiled train-step time, blocking on each step's outputs;
  tokens_per_s             batch_size x seq_len / median step time;
  flops_per_token          forward matmul FLOPs per token (factorized/model/costs.py: embedding,
                           output head, blocks); a train step counts 3x that
                           (train_flops_per_token: backward = 2x forward);
  mfu                      tokens_per_s x train_flops_per_token / (devices x peak), where
                           the peak is the best median FLOP/s of jitted NxN matmuls
                           (--peak_sizes) on one device, timed in the same rounds, and
                           devices is every device of the mesh the tokens/s counts
                           (mfu_vs_max_peak: against the best sample);
  mfu_vs_published         the same against the device's published dense peak in the
                           compute dtype (PUBLISHED_PEAK_FLOPS, or --published_peak_tflops;
                           None for a device it does not know, such as a CPU);
  eval_ms_median, ...      the evaluation step (forward + masked NLL sum) on the same batch;
  xla_memory_bytes         what XLA's buffer assignment reserves for one train step
                           (arguments + outputs + temporaries - donated aliases);
  xla_temp_bytes           its temporaries alone (memory_analysis' temp_size_in_bytes): the
                           activations, the loss's logits tiles and the gradients;
  head_chunk_rows          rows per chunk of the chunked head + loss (factorized/model/loss.py;
                           --head_chunk_rows, 0: automatic);
  peak_memory_bytes        the device's peak_bytes_in_use where the backend reports it,
                           else the process's peak RSS, both read after this row's warm-up
                           (a high-water mark of the process so far: rows warm up in order);
  cpu_ms_per_step          CPU time (user + sys, all threads) of the process per timed train
                           step: less sensitive than wall time to other processes' load;
  minor_faults_per_step    page faults of the process per timed train step (allocator);
  compile_s                seconds to lower and compile the train step (XLA's autotuning
                           included; printed to stderr as each row compiles);
  recompiles               compilations or traces seen during the timed steps (should be 0).
The timed steps run under jax.transfer_guard('disallow'): an implicit host transfer in
the step would raise. --profile DIR then traces 3 more steps of each row with
jax.profiler (DIR/<row>: TensorBoard's profile plugin or xprof reads it) and prints each
row's top XLA ops, with shapes and JAX op names from the compiled HLO.

  python benchmarks/step_time.py --kinds=dense,svd,albert --ranks=16,32,64,128 \
      --dropout=0 --reference --out=/tmp/step_time.json --plot
  python benchmarks/step_time.py --kinds=dense,svd,adaptive,tt --ranks=8,16,32,64 --plot
  # Every kind at Brown's default shape, ranks spanning ~5% to 100% of dense's vocabulary
  # parameters (adaptive and tt get Zipf counts, as below):
  python benchmarks/step_time.py --brown --kinds=dense,svd,albert,adaptive,tt \
      --ranks=16,64 --steps=12 --rounds=3 --eval_steps=0
  # dpq with G = 32 groups (--embed sets a kind's own model.embed fields):
  python benchmarks/step_time.py --brown --kinds=dense,dpq --ranks=64 --embed=dpq_groups=32
  # Against the vocabulary size (speedup_vs_dense is per vocabulary size):
  python benchmarks/step_time.py --kinds=dense,svd --ranks=64 --dropout=0 \
      --vocab_sizes=16384,50304,131072 --steps=10 --rounds=2 --out=/tmp/vocab.json

A kind that needs train-split counts (adaptive's frequency order) gets Zipf counts over the
ids (id 0 most frequent): the step's speed does not depend on which ids are frequent.

The fast malloc of factorized/runtime/allocator.py is applied first (FACTORIZED_FAST_MALLOC=0
turns it off); `fast_malloc` in each row says whether it was active.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from factorized.runtime.allocator import ensure_fast_malloc, fast_malloc_active  # noqa: E402

if __name__ == '__main__':
  ensure_fast_malloc()  # Before jax is imported: it re-execs the process.

import argparse  # noqa: E402
import collections  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_step  # noqa: E402

from configs import brown  # noqa: E402
from factorized import embeddings  # noqa: E402
from factorized.config import build  # noqa: E402
from factorized.model import costs, loss  # noqa: E402
from factorized.runtime import parallel  # noqa: E402
from factorized.spec import Spec  # noqa: E402
from factorized.train import optim, trainer  # noqa: E402
from factorized.train import step as step_lib  # noqa: E402
from factorized.train.step import BoundStep, make_eval_step, make_train_step  # noqa: E402

# Vendors' published dense (no sparsity) peak FLOP/s of one device, by jax's device_kind
# and compute dtype: NVIDIA's H100/H200 SXM and A100 datasheets (bf16 on tensor cores, fp32
# without them), Google's Cloud TPU pages. Matched on the start of device_kind.
PUBLISHED_PEAK_FLOPS = {
    ('NVIDIA H200', 'bfloat16'): 989.4e12, ('NVIDIA H200', 'float32'): 66.9e12,
    ('NVIDIA H100 80GB HBM3', 'bfloat16'): 989.4e12,
    ('NVIDIA H100 80GB HBM3', 'float32'): 66.9e12,
    ('NVIDIA A100', 'bfloat16'): 312e12, ('NVIDIA A100', 'float32'): 19.5e12,
    ('TPU v4', 'bfloat16'): 275e12, ('TPU v5 lite', 'bfloat16'): 197e12,
    ('TPU v5p', 'bfloat16'): 459e12, ('TPU v6 lite', 'bfloat16'): 918e12,
}

# configs/brown.py's default shape, with Brown's vocabulary (17,906 ids).
BROWN_SHAPE = {'vocab_size': 17_906, 'model_dim': 128, 'num_layers': 2, 'num_heads': 4,
               'mlp_dim': 512, 'seq_len': 128, 'batch_size': 32, 'vocab_sizes': ''}

COMPILE_EVENTS = ('/jax/core/compile/backend_compile_duration',
                  '/jax/core/compile/jaxpr_trace_duration')


@dataclasses.dataclass
class Bench:
  """One configuration under test: its steps, its live state and its timings."""

  name: str
  kind: str
  rank: int
  vocab_size: int
  config: Spec
  train: Callable  # state, batch -> (state, metrics or loss)
  state: object
  batch: dict
  evaluate: Callable | None  # () -> device scalar(s)
  step_s: list[float] = dataclasses.field(default_factory=list)
  eval_s: list[float] = dataclasses.field(default_factory=list)
  minor_faults: int = 0
  cpu_s: float = 0.0
  hlo_text: str = ''
  info: dict = dataclasses.field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """The command-line flags (see the module docstring)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--kinds', default='dense,svd,albert',
                      help=f'comma-separated, of {",".join(embeddings.KINDS)}')
  parser.add_argument('--ranks', default='16,32,64,128',
                      help='comma-separated ranks of every kind that has one (dense has none)')
  parser.add_argument('--head', default='tied', choices=('tied', 'untied'))
  reference_step.add_shape_flags(parser)
  parser.add_argument('--brown', action='store_true',
                      help="Brown's default shape (configs/brown.py: V=17,906, D=128, 2 layers, "
                      '4 heads, MLP 512, batch 32x128), overriding the shape flags')
  parser.add_argument('--dropout', type=float, default=None,
                      help="model.dropout (default: configs/brown.py's)")
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--vocab_sizes', default='',
                      help='comma-separated vocabulary sizes to sweep (default: --vocab_size)')
  parser.add_argument('--head_chunk_rows', type=int, default=0,
                      help='model.head_chunk_rows: rows per chunk of the loss (0: automatic; '
                      'batch_size x seq_len: one chunk)')
  parser.add_argument('--head_chunk_vocab', type=int, default=0,
                      help='model.head_chunk_vocab: vocabulary rows per slice of a dense or '
                      'untied head in the chunked loss (0: automatic)')
  parser.add_argument('--remat', action='store_true',
                      help='model.remat: recompute each block in the backward pass')
  parser.add_argument('--memory_only', action='store_true',
                      help="compile each row and report XLA's memory of its train step; "
                      'no timing (fast, exact, independent of load)')
  parser.add_argument('--steps', type=int, default=20, help='timed train steps per row (>= 20)')
  parser.add_argument('--eval_steps', type=int, default=8,
                      help='timed eval steps per row (0: the eval step is neither compiled nor '
                      'run, which saves its compile time on each row)')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps after compiling')
  parser.add_argument('--rounds', type=int, default=4, help='interleaved rounds')
  parser.add_argument('--peak_sizes', default='1024,2048',
                      help='N of the NxN peak matmuls; the peak is the best of their medians')
  parser.add_argument('--published_peak_tflops', type=float, default=0.0,
                      help="one device's published dense peak in the compute dtype, TFLOP/s, "
                      'for mfu_vs_published (0: PUBLISHED_PEAK_FLOPS by device kind)')
  parser.add_argument('--reference', action='store_true',
                      help='also time reference_step.py (plain JAX, dense, tied, float32, '
                      'no dropout: compare it with --dropout=0)')
  parser.add_argument('--profile', default='',
                      help='after timing, trace 3 more steps of each row with jax.profiler into '
                      'DIR/<row> (TensorBoard profile plugin / xprof) and print its top ops')
  parser.add_argument('--embed', default='',
                      help="a kind's own model.embed fields for its rows, e.g. dpq_groups=32 "
                      '(comma-separated FIELD=VALUE; a row whose kind lacks a field ignores it)')
  parser.add_argument('--out', default='', help='write the rows as JSON here (and .csv beside)')
  parser.add_argument('--plot', nargs='?', const='', default=None,
                      help='draw tokens/s against rank (PNG; default: beside --out)')
  args = parser.parse_args(argv)
  if args.brown:
    args.__dict__.update(BROWN_SHAPE)
  args.kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
  args.ranks = [int(r) for r in args.ranks.split(',') if r.strip()]
  args.mlp_dim = args.mlp_dim or 4 * args.model_dim
  args.peak_sizes = [int(n) for n in args.peak_sizes.split(',') if n.strip()]
  args.vocab_sizes = [int(v) for v in args.vocab_sizes.split(',') if v.strip()] or [
      args.vocab_size]
  unknown = set(args.kinds) - set(embeddings.KINDS)
  if unknown:
    parser.error(f'--kinds: unknown {sorted(unknown)}; allowed: {", ".join(embeddings.KINDS)}')
  pairs = [item.split('=', 1) for item in args.embed.split(',') if item.strip()]
  own = {field for kind in args.kinds for field in embeddings.kind(kind).fields}
  if any(len(pair) != 2 or pair[0] not in own for pair in pairs):
    parser.error(f'--embed={args.embed!r}: FIELD=VALUE pairs of the fields of --kinds: '
                 f'{", ".join(sorted(own)) or "none"}')
  args.embed = {field: type(_field_default(args.kinds, field))(value) for field, value in pairs}
  if args.rounds < 1 or args.steps < args.rounds:
    parser.error('--steps must be >= --rounds >= 1')
  return args


def _field_default(kinds: list[str], field: str):
  """The default of a kind's own model.embed `field` (its type parses --embed's value)."""
  return next(embeddings.kind(k).fields[field] for k in kinds
              if field in embeddings.kind(k).fields)


def row_suffix(args: argparse.Namespace, kind: str) -> str:
  """'_dpq_groups32': the --embed fields a row's kind takes, in its name."""
  fields = embeddings.kind(kind).fields
  return ''.join(f'_{field}{value:g}' if isinstance(value, float) else f'_{field}{value}'
                 for field, value in args.embed.items() if field in fields)


def make_config(args: argparse.Namespace, kind: str, rank: int) -> Spec:
  """configs/brown.py for `kind` and `rank`, with the sizes of the flags, as a Spec."""
  config = brown.get_config(f'kind={kind},rank={rank},head={args.head}')
  fields = embeddings.kind(kind).fields
  config.model.embed.update({f: v for f, v in args.embed.items() if f in fields})
  config.data.seq_len = args.seq_len
  config.model.update(model_dim=args.model_dim, num_layers=args.num_layers,
                      num_heads=args.num_heads, mlp_dim=args.mlp_dim, dtype=args.dtype)
  if args.dropout is not None:
    config.model.dropout = args.dropout
  config.model.head_chunk_rows = args.head_chunk_rows
  config.model.head_chunk_vocab = args.head_chunk_vocab
  config.model.remat = args.remat
  config.train.batch_size = args.batch_size
  config.train.eval_batch_size = args.batch_size
  return build.from_config(config)


def synthetic_batch(args: argparse.Namespace) -> dict[str, np.ndarray]:
  """Random int32 inputs and targets (the step's speed does not depend on their values)."""
  return reference_step.synthetic_batch(args.vocab_size, args.batch_size, args.seq_len)


def project_bench(args: argparse.Namespace, kind: str, rank: int, mesh) -> Bench:
  """The project's train and eval steps, built as trainer.build_run builds them."""
  config = make_config(args, kind, rank)
  zipf_counts = args.vocab_size * 100 // np.arange(1, args.vocab_size + 1)
  run_args = build.build_args(config, args.vocab_size)
  parts, state = trainer.init_state(run_args, mesh, token_counts=zipf_counts)
  optimizer = optim.make_optimizer(run_args.train, run_args.model)
  train = make_train_step(parts, optimizer, optim.learning_rate_schedule(run_args.train), mesh)
  evaluate_step = make_eval_step(parts, mesh)
  host_batch = synthetic_batch(args)
  batch = parallel.global_batch(host_batch, mesh)
  eval_batch = parallel.global_batch(
      {**host_batch, 'mask': np.ones_like(host_batch['targets'])}, mesh)
  name = (f'{kind}{rank}' if embeddings.ranked(kind) else kind) + row_suffix(args, kind)
  if len(args.vocab_sizes) > 1:
    name += f'@{args.vocab_size}'
  bench = Bench(name, kind, rank if embeddings.ranked(kind) else 0, args.vocab_size, config,
                train, state, batch, None)
  model = parts.merge(state.params)
  bench.info['head_chunk_rows'] = loss.chunk_rows_for(
      args.head_chunk_rows, args.batch_size * args.seq_len, args.vocab_size,
      loss.head_width(model.head_module(), args.vocab_size))
  bench.info['remat'] = args.remat
  bench.evaluate = eval_runner(evaluate_step, bench, eval_batch, mesh)
  analyse(bench)
  return bench


def eval_runner(evaluate_step: Callable, bench: Bench, eval_batch: dict, mesh
                ) -> Callable[[], jax.Array]:
  """`() -> result` of one eval step on `eval_batch` with the current params.

  make_eval_step's step is `(params, batch, sums, index) -> sums` (sums donated).
  """
  holder = {'sums': step_lib.eval_sums(1, 0, mesh),
            'index': jax.device_put(np.int32(0), parallel.replicated(mesh))}

  def run() -> jax.Array:
    holder['sums'] = evaluate_step(bench.state.params, eval_batch, holder['sums'],
                                   holder['index'])
    return holder['sums']

  return run


def reference_bench(args: argparse.Namespace) -> Bench:
  """reference_step.py's plain-JAX dense step at the same shape."""
  params = reference_step.init_params(
      jax.random.key(0), vocab_size=args.vocab_size, model_dim=args.model_dim,
      num_layers=args.num_layers, mlp_dim=args.mlp_dim)
  state = reference_step.init_state(params)
  train = reference_step.make_train_step(args.num_heads)
  batch = jax.device_put(synthetic_batch(args))
  config = make_config(args, 'dense', 0).replace(  # what reference_step.py computes
      **{'model.dropout': 0.0, 'model.dtype': 'float32', 'model.embed.head': 'tied'})
  name = 'reference' if len(args.vocab_sizes) == 1 else f'reference@{args.vocab_size}'
  bench = Bench(name, 'reference', 0, args.vocab_size, config, train, state, batch, None)
  analyse(bench)
  return bench


def compile_train(bench: Bench):
  """Compiles the row's train step once, for these shapes, and times that executable (a
  second compile for the analysis alone cost the test suite a compile per row); returns
  it for its memory analysis and HLO."""
  if isinstance(bench.train, BoundStep):
    bench.train = bench.train.compile(bench.state, bench.batch)
    return bench.train.jitted
  bench.train = bench.train.lower(bench.state, bench.batch).compile()  # reference_step's jit
  return bench.train


def analyse(bench: Bench) -> None:
  """Records XLA's memory for one step (arguments + outputs + temporaries - aliases)."""
  start = time.perf_counter()
  compiled = compile_train(bench)
  bench.info['compile_s'] = time.perf_counter() - start
  print(f'{bench.name}: train step compiled in {bench.info["compile_s"]:.1f} s', file=sys.stderr,
        flush=True)  # Rows come out at the end; this shows progress where compiles are slow.
  stats = compiled.memory_analysis() if compiled is not None else None
  bench.info['xla_memory_bytes'] = None if stats is None else int(
      stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
      - stats.alias_size_in_bytes)
  bench.info['xla_temp_bytes'] = None if stats is None else int(stats.temp_size_in_bytes)
  bench.hlo_text = compiled.as_text() if compiled is not None else ''


def peak_memory() -> tuple[int, str]:
  """(bytes, source): the device's peak bytes in use where reported, else peak RSS."""
  stats = jax.devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device_peak_bytes_in_use'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'process_peak_rss'


class CompileCounter:
  """Counts JAX traces and backend compilations (jax.monitoring events)."""

  def __init__(self):
    self.count = 0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event in COMPILE_EVENTS:
      self.count += 1


def published_peak(device_kind: str, dtype: str, override_tflops: float) -> float | None:
  """One device's published dense peak FLOP/s in `dtype`, or None where unknown."""
  if override_tflops > 0:
    return override_tflops * 1e12
  return next((flops for (kind, kind_dtype), flops in PUBLISHED_PEAK_FLOPS.items()
               if device_kind.startswith(kind) and kind_dtype == dtype), None)


def time_peak(size: int, dtype: str, reps: int) -> list[float]:
  """FLOP/s samples of a jitted NxN @ NxN matmul in `dtype` (the machine's matmul peak)."""
  if not hasattr(time_peak, 'cache'):
    time_peak.cache = {}
  key = (size, dtype)
  if key not in time_peak.cache:
    keys = jax.random.split(jax.random.key(1))
    a, b = (jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys)
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=a.dtype))
    jax.block_until_ready(matmul(a, b))
    time_peak.cache[key] = (matmul, a, b)
  matmul, a, b = time_peak.cache[key]
  samples = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    samples.append(2 * size ** 3 / (time.perf_counter() - start))
  return samples


def run_steps(bench: Bench, count: int, record: bool) -> None:
  """Runs `count` train steps, blocking on each one's outputs; times them if `record`."""
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(count):
    start = time.perf_counter()
    bench.state, metrics = bench.train(bench.state, bench.batch)
    jax.block_until_ready((bench.state, metrics))
    if record:
      bench.step_s.append(time.perf_counter() - start)
  if record:
    after = resource.getrusage(resource.RUSAGE_SELF)
    bench.minor_faults += after.ru_minflt - before.ru_minflt
    bench.cpu_s += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def run_evals(bench: Bench, count: int, record: bool) -> None:
  """Runs `count` eval steps; times them if `record`."""
  if bench.evaluate is None:
    return
  for _ in range(count):
    start = time.perf_counter()
    jax.block_until_ready(bench.evaluate())
    if record:
      bench.eval_s.append(time.perf_counter() - start)


def split_evenly(total: int, parts: int) -> list[int]:
  """`total` as `parts` near-equal counts."""
  return [total // parts + (i < total % parts) for i in range(parts)]


def row_specs(args: argparse.Namespace) -> list[tuple[str, int]]:
  """(kind, rank) of every row at one vocabulary size."""
  specs = []
  for kind in args.kinds:
    specs += [(kind, rank) for rank in args.ranks] if embeddings.ranked(kind) else [(kind, 0)]
  return specs


def memory_rows(args: argparse.Namespace) -> list[dict]:
  """--memory_only: XLA's memory of each row's compiled train step, nothing run."""
  mesh = parallel.make_mesh()
  rows = []
  for vocab_size in args.vocab_sizes:
    shape = argparse.Namespace(**{**vars(args), 'vocab_size': vocab_size})
    for kind, rank in row_specs(args):
      bench = project_bench(shape, kind, rank, mesh)
      logits_bytes = 4 * args.batch_size * args.seq_len * vocab_size
      rows.append({'name': bench.name, 'kind': kind, 'rank': bench.rank,
                   'vocab_size': vocab_size, 'batch_size': args.batch_size,
                   'seq_len': args.seq_len, 'model_dim': args.model_dim, 'dtype': args.dtype,
                   **bench.info, 'logits_bytes': logits_bytes,
                   'temp_vs_logits': (bench.info['xla_temp_bytes'] / logits_bytes
                                      if bench.info['xla_temp_bytes'] else None),
                   'backend': jax.default_backend()})
      del bench
  return rows


def format_memory_table(rows: list[dict]) -> str:
  """A plain-text table of --memory_only rows."""
  header = (f'{"row":>14} {"V":>8} {"chunk rows":>10} {"remat":>5} {"XLA MiB":>8} '
            f'{"temp MiB":>8} {"temp / BxLxV":>12}')
  lines = [header, '-' * len(header)]
  for r in rows:
    xla = f'{r["xla_memory_bytes"] / 2**20:.0f}' if r.get('xla_memory_bytes') else '-'
    temp = f'{r["xla_temp_bytes"] / 2**20:.0f}' if r.get('xla_temp_bytes') else '-'
    ratio = f'{r["temp_vs_logits"]:.1%}' if r.get('temp_vs_logits') else '-'
    lines.append(f'{r["name"]:>14} {r["vocab_size"]:>8,} {r["head_chunk_rows"]:>10} '
                 f'{"yes" if r["remat"] else "no":>5} {xla:>8} {temp:>8} {ratio:>12}')
  return '\n'.join(lines)


def benchmark(args: argparse.Namespace) -> list[dict]:
  """Builds, warms up and times every row; returns the rows (see the module docstring)."""
  mesh = parallel.make_mesh()
  specs = row_specs(args)
  load_start = os.getloadavg()
  benches = []
  for vocab_size in args.vocab_sizes:
    shape = argparse.Namespace(**{**vars(args), 'vocab_size': vocab_size})
    for kind, rank in specs:
      benches.append(project_bench(shape, kind, rank, mesh))
      run_steps(benches[-1], args.warmup, record=False)
      run_evals(benches[-1], min(args.eval_steps, 1), record=False)  # compiles it
      benches[-1].info['peak_memory_bytes'], benches[-1].info['memory_source'] = peak_memory()
    if args.reference:
      benches.append(reference_bench(shape))
      run_steps(benches[-1], args.warmup, record=False)
      benches[-1].info['peak_memory_bytes'], benches[-1].info['memory_source'] = peak_memory()
  for size in args.peak_sizes:
    time_peak(size, args.dtype, 1)  # compile

  counter = CompileCounter()
  peak_samples = {size: [] for size in args.peak_sizes}
  step_counts = split_evenly(args.steps, args.rounds)
  eval_counts = split_evenly(args.eval_steps, args.rounds)
  with jax.transfer_guard('disallow'):
    for steps, evals in zip(step_counts, eval_counts, strict=True):
      for size in args.peak_sizes:
        peak_samples[size] += time_peak(size, args.dtype, 3)
      for bench in benches:
        run_steps(bench, steps, record=True)
        run_evals(bench, evals, record=True)
  load_end = os.getloadavg()
  if args.profile:
    for bench in benches:
      bench.info['profile_top_ops'] = profile(bench, args.profile)

  peak_by_size = {size: statistics.median(samples) for size, samples in peak_samples.items()}
  peak = max(peak_by_size.values())
  peak_max = max(max(samples) for samples in peak_samples.values())
  tokens = args.batch_size * args.seq_len
  devices = mesh.devices.size  # The tokens/s counts every device of the mesh.
  device_kind = jax.devices()[0].device_kind
  published = published_peak(device_kind, args.dtype, args.published_peak_tflops)
  rows = []
  for bench in benches:
    config = bench.config
    model_args = build.model_args(config, bench.vocab_size)
    flops = costs.flops_per_token(model_args)
    median = statistics.median(bench.step_s)
    tokens_per_s = tokens / median
    train_flops = 3 * flops['total']
    row = {
        'name': bench.name, 'kind': bench.kind, 'rank': bench.rank,
        'head': config.model.embed.head,
        'vocab_size': bench.vocab_size, 'model_dim': args.model_dim,
        'num_layers': args.num_layers, 'num_heads': args.num_heads, 'mlp_dim': args.mlp_dim,
        'seq_len': args.seq_len, 'batch_size': args.batch_size, 'dtype': config.model.dtype,
        'dropout': float(config.model.dropout),
        'params': costs.param_counts(model_args)['total'],
        'steps': len(bench.step_s),
        'step_ms_median': median * 1e3, 'step_ms_min': min(bench.step_s) * 1e3,
        'step_ms_max': max(bench.step_s) * 1e3, 'tokens_per_s': tokens_per_s,
        'flops_per_token': flops['total'], 'flops_embedding': flops['embedding'],
        'flops_output_head': flops['output_head'], 'flops_blocks': flops['blocks'],
        'train_flops_per_token': train_flops,
        'peak_flops': peak, 'peak_flops_max': peak_max,
        'peak_flops_by_size': {str(size): value for size, value in peak_by_size.items()},
        'devices': devices,
        'mfu': tokens_per_s * train_flops / (devices * peak),
        'mfu_vs_max_peak': tokens_per_s * train_flops / (devices * peak_max),
        'published_peak_flops': published,
        'mfu_vs_published': (tokens_per_s * train_flops / (devices * published)
                             if published else None),
        'eval_ms_median': statistics.median(bench.eval_s) * 1e3 if bench.eval_s else None,
        'eval_ms_min': min(bench.eval_s) * 1e3 if bench.eval_s else None,
        'eval_ms_max': max(bench.eval_s) * 1e3 if bench.eval_s else None,
        'eval_tokens_per_s': tokens / statistics.median(bench.eval_s) if bench.eval_s else None,
        'minor_faults_per_step': bench.minor_faults / len(bench.step_s),
        'cpu_ms_per_step': bench.cpu_s / len(bench.step_s) * 1e3,
        **bench.info,
        'recompiles': counter.count,
        'load_avg_start': load_start[0], 'load_avg_end': load_end[0],
        'fast_malloc': fast_malloc_active(), 'backend': jax.default_backend(),
        'device': device_kind,
    }
    rows.append(row)
  for row in rows:
    dense = next((r for r in rows if r['kind'] == 'dense'
                  and r['vocab_size'] == row['vocab_size']), None)
    row['speedup_vs_dense'] = row['tokens_per_s'] / dense['tokens_per_s'] if dense else None
  return rows


def profile(bench: Bench, directory: str, steps: int = 3, top: int = 12) -> list[dict]:
  """Traces `steps` train steps into directory/<row>; returns the top ops per step.

  Each op is an XLA thunk of the compiled step (a fusion, a YNNPACK matmul `ynn_fusion*`,
  an Eigen matmul `dot*`), with its shape and JAX op name from the compiled HLO. Eigen
  matmuls run asynchronously on the thunk executor, so the trace under-counts them.
  """
  trace_dir = os.path.join(directory, bench.name)
  jax.profiler.start_trace(trace_dir)
  run_steps(bench, steps, record=False)
  jax.profiler.stop_trace()
  paths = sorted(glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*', '*.trace.json.gz')))
  if not paths:
    return []
  with gzip.open(paths[-1]) as f:
    events = json.load(f)['traceEvents']
  total_us = collections.Counter()
  for event in events:
    name = event.get('name', '')
    if event.get('ph') == 'X' and not name.startswith('$') and name[:1].islower():
      total_us[name] += event['dur']
  ops = []
  for name, micros in total_us.most_common():
    match = re.search(r'%' + re.escape(name) + r' = (\S+) .*?op_name="([^"]*)"', bench.hlo_text)
    if match or name.startswith(('ynn_fusion', 'dot', 'all-reduce')):
      ops.append({'op': name, 'ms_per_step': micros / 1e3 / steps,
                  'shape': match.group(1) if match else '',
                  'jax_op': match.group(2) if match else ''})
    if len(ops) == top:
      break
  return ops


def format_table(rows: list[dict]) -> str:
  """A plain-text table of the main columns."""
  header = (f'{"row":>10} {"params":>9} {"fwd MF/tok":>10} {"step ms (min-max)":>21} '
            f'{"cpu ms":>7} {"tokens/s":>9} {"x dense":>7} {"MFU":>6} {"MFU pub":>7} '
            f'{"eval ms":>8} {"XLA MB":>7} {"temp MB":>7} {"peak MB":>8} {"faults/step":>11}')
  lines = [header, '-' * len(header)]
  for r in rows:
    spread = f'{r["step_ms_median"]:.1f} ({r["step_ms_min"]:.0f}-{r["step_ms_max"]:.0f})'
    eval_ms = f'{r["eval_ms_median"]:.1f}' if r['eval_ms_median'] is not None else '-'
    xla = f'{r["xla_memory_bytes"] / 2**20:.0f}' if r.get('xla_memory_bytes') else '-'
    temp = f'{r["xla_temp_bytes"] / 2**20:.0f}' if r.get('xla_temp_bytes') else '-'
    speedup = f'{r["speedup_vs_dense"]:.2f}' if r['speedup_vs_dense'] else '-'
    published = f'{r["mfu_vs_published"]:.1%}' if r['mfu_vs_published'] else '-'
    lines.append(
        f'{r["name"]:>10} {r["params"] / 1e6:8.2f}M {r["flops_per_token"] / 1e6:10.2f} '
        f'{spread:>21} {r["cpu_ms_per_step"]:7.0f} {r["tokens_per_s"]:9,.0f} {speedup:>7} '
        f'{r["mfu"]:6.1%} {published:>7} {eval_ms:>8} '
        f'{xla:>7} {temp:>7} {r["peak_memory_bytes"] / 2**20:8.0f} '
        f'{r["minor_faults_per_step"]:11,.0f}')
  r = rows[0]
  lines.append(
      f'peak {r["peak_flops"] / 1e9:.1f} GFLOP/s (best median of NxN matmuls, N in '
      f'{",".join(r["peak_flops_by_size"])}; best sample {r["peak_flops_max"] / 1e9:.1f}) '
      f'({jax.default_backend()} {r["device"]}, {r["dtype"]}); MFU = tokens/s x 3 x forward '
      f'FLOPs/token / ({r["devices"]} device(s) x peak); MFU pub: against the published peak '
      f'{published_text(r)}; load average {r["load_avg_start"]:.2f} -> '
      f'{r["load_avg_end"]:.2f}; fast malloc {"on" if r["fast_malloc"] else "off"}; '
      f'recompiles while timing: {r["recompiles"]}; memory: {r["memory_source"]}')
  return '\n'.join(lines)


def published_text(row: dict) -> str:
  """'989.4 TFLOP/s' or 'unknown for this device'."""
  flops = row['published_peak_flops']
  return f'{flops / 1e12:.1f} TFLOP/s' if flops else 'unknown for this device'


def write_outputs(rows: list[dict], out: str) -> None:
  """`out` (JSON list of rows) and the same rows as CSV beside it."""
  with open(out, 'w') as f:
    json.dump(rows, f, indent=1)
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with open(os.path.splitext(out)[0] + '.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def plot_vocab(rows: list[dict], path: str) -> None:
  """tokens/s and XLA temporaries against the vocabulary size: a line per row kind."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, (speed_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
  for label in dict.fromkeys(r['name'].split('@')[0] for r in rows):
    mine = sorted((r for r in rows if r['name'].split('@')[0] == label),
                  key=lambda r: r['vocab_size'])
    vocab = [r['vocab_size'] for r in mine]
    speed_ax.plot(vocab, [r['tokens_per_s'] for r in mine], marker='o', label=label)
    if all(r.get('xla_temp_bytes') for r in mine):
      memory_ax.plot(vocab, [r['xla_temp_bytes'] / 2**20 for r in mine], marker='o', label=label)
  r = rows[0]
  for ax, ylabel in ((speed_ax, 'train tokens/s'), (memory_ax, 'XLA temporaries (MiB)')):
    ax.set_xscale('log')
    ax.set(xlabel='vocabulary size V', ylabel=ylabel)
    ax.legend()
  fig.suptitle(f'D={r["model_dim"]} N={r["num_layers"]} L={r["seq_len"]} B={r["batch_size"]} '
               f'{r["dtype"]} ({r["backend"]})')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot(rows: list[dict], path: str) -> None:
  """tokens/s against rank: a line per factorized kind, dense and reference as levels
  (against the vocabulary size instead when the rows sweep it)."""
  if len({r['vocab_size'] for r in rows}) > 1:
    plot_vocab(rows, path)
    return
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  from factorized.analysis import plots

  ranked = [kind for kind in embeddings.KINDS if embeddings.ranked(kind)]
  fig, ax = plt.subplots(figsize=(6, 4))
  for kind in ranked:
    points = sorted((r['rank'], r['tokens_per_s']) for r in rows if r['kind'] == kind)
    if points:
      ax.plot(*zip(*points, strict=True), marker='o', label=kind)
  for kind, style in (('dense', '--'), ('reference', ':')):
    for r in rows:
      if r['kind'] == kind:
        ax.axhline(r['tokens_per_s'], linestyle=style, color='gray', label=kind)
  r = rows[0]
  ranks = sorted({r['rank'] for r in rows if r['kind'] in ranked})
  if ranks:
    ax.set_xscale('log', base=2)
    ax.set_xticks(ranks, [str(rank) for rank in ranks])
  ax.set(xlabel=plots.rank_label(), ylabel='train tokens/s',
         title=f'V={r["vocab_size"]} D={r["model_dim"]} N={r["num_layers"]} '
               f'L={r["seq_len"]} B={r["batch_size"]} {r["dtype"]} ({r["backend"]})')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
  """Runs the benchmark, prints the table, writes --out and --plot."""
  args = parse_args(argv)
  if args.memory_only:
    rows = memory_rows(args)
    print(format_memory_table(rows), flush=True)
    if args.out:
      write_outputs(rows, args.out)
    return rows
  rows = benchmark(args)
  print(format_table(rows), flush=True)
  for row in rows:
    for op in row.get('profile_top_ops', []):
      print(f'{row["name"]:>10} {op["ms_per_step"]:8.1f} ms/step  {op["op"]:<28} '
            f'{op["shape"]:<24} {op["jax_op"][-60:]}')
  if args.out:
    write_outputs(rows, args.out)
  if args.plot is not None:
    path = args.plot or (os.path.splitext(args.out)[0] + '.png' if args.out
                         else 'step_time.png')
    plot(rows, path)
  return rows


if __name__ == '__main__':
  main()
