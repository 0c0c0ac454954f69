r"""Post-training quantization of a trained run's vocabulary tables, without retraining.

`posthoc_quant(workdir, split, bits)` restores a run of any kind (by default the checkpoint
that its summary's test_ppl uses: the best by valid perplexity), quantizes every table
matrix of its embedding and head (the dense W, every factor of every kind, an untied head's
W: `table_paths` of factorized/embeddings/quantize.py, whose docstring has the formulas) to
b-bit integers with a float32 scale per row, or per `group` columns, and scores the model
computing with w' = q s, every other parameter unchanged, with the same exact Evaluator as
training (every token once). A run trained with quantization (model.embed.quant_bits) is
scored with its own fake quantization off: its float32 tables are quantized once, at each b
(at its own b, that gives its own perplexity).

Results: workdir/posthoc_quant_<split>.json: {"method": "posthoc_quant", "split", "step",
"checkpoint", "group", "trained_quant_bits", "trained_ppl" and "trained_bytes" (the run as
it was trained), "ppl_by_bits": {"8": ..., "4": ...}, "bytes_by_bits": {"8": {"embedding",
"output_head", "vocab"}, ...} (factorized/model/costs.py `vocab_bytes`), and per bits the
perplexity of each frequency band, class and of the frequent types ("bands_ppl_by_bits",
"classes_ppl_by_bits", "frequent_ppl_by_bits"; the trained run's as "trained_bands_ppl",
...)}, and TensorBoard scalars posthoc_quant/<split>_ppl with step = bits.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
from flax import nnx

from factorized import files
from factorized.embeddings import quantize
from factorized.evaluation import saved as eval_run
from factorized.model import costs
from factorized.model.transformer import ModelArgs
from factorized.runtime import parallel
from factorized.spec import Spec
from factorized.train import trainer
from factorized.train.metric_writer import MetricWriter

METHOD = 'posthoc_quant'
QUANT_FILE = METHOD + '_{split}.json'  # in the run's workdir, beside posthoc_svd_<split>.json
GROUPINGS = ('bands', 'classes')  # an Evaluator result's per-group numbers kept (their ppl)

log = logging.getLogger(__name__)


def parse_bits(values: list[str]) -> list[int]:
  """The bit widths of --quant_bits=8,4, each 8 or 4; a ValueError naming the flag otherwise."""
  try:
    bits = [int(value) for value in values]
  except ValueError:
    bits = []
  if not bits or any(b not in quantize.BITS or not b for b in bits):
    raise ValueError(f'--quant_bits={",".join(values)}: expected bit widths 8 and/or 4, '
                     'e.g. 8,4.')
  return sorted(set(bits), reverse=True)


def quant_config(config: Spec, bits: int, group: int) -> Spec:
  """`config` with its tables quantized to `bits`, a scale per `group` columns (0: per row)."""
  return config.replace(**{'model.embed.quant_bits': int(bits),
                           'model.embed.quant_group': int(group)})


def quant_model(args: ModelArgs, bits: int, group: int) -> ModelArgs:
  """`args` with its tables quantized to `bits`, a scale per `group` columns (0: per row);
  `group` checked against the tables already (quantize.check_group)."""
  return dataclasses.replace(args, quant_bits=int(bits), quant_group=int(group))


def quantized_params(model: nnx.Module, bits: int, group: int = 0) -> nnx.State:
  """The model's parameters with every table matrix of its embedding and head replaced by
  w' = q s (quantize.quantized_module's values: what training with these bits computes)."""
  params = nnx.state(model, nnx.Param)
  for name in ('embed', 'head'):
    module = getattr(model, name)
    if module is not None:
      params[name] = nnx.state(quantize.quantized_module(module, bits, group), nnx.Param)
  return params


def plain_run(run: trainer.Run) -> trainer.Run:
  """`run` computing with its parameters as they are: a run trained with quantization gets
  the model of its config without it (same parameters, fake quantization off)."""
  if not run.args.model.quant_bits:
    return run
  args = dataclasses.replace(run.args, model=quant_model(run.args.model, 0, 0))
  parts, _ = trainer.init_state(args, run.mesh, token_counts=run.token_counts,
                                optimizer=run.optimizer)
  return dataclasses.replace(run, config=quant_config(run.config, 0, 0), args=args, parts=parts)


def _group_ppl(result: dict) -> dict:
  """The perplexities of an Evaluator result: per band and class, and of the frequent types."""
  return {**{grouping: {name: group['ppl'] for name, group in result[grouping].items()}
             for grouping in GROUPINGS}, 'frequent': result['frequent']['ppl']}


def posthoc_quant(workdir: str, split: str = 'test', bits: list[int] | tuple[int, ...] = (8, 4),
                  *, group: int = 0, checkpoint: str = 'best',
                  mesh: jax.sharding.Mesh | None = None) -> dict:
  """Perplexity on `split` of a run with its vocabulary tables quantized to each of `bits`
  (see the module docstring); writes workdir/posthoc_quant_<split>.json and TensorBoard
  scalars."""
  if split not in ('valid', 'test'):
    raise ValueError(f'--split={split!r}: expected valid or test.')
  bits = parse_bits([str(b) for b in bits])
  quantize.check_group(group, '--quant_group')
  run, step = eval_run.restore_run(workdir, checkpoint, mesh=mesh)
  model = run.args.model
  group = quantize.check_group(group, '--quant_group', model.table_shapes())
  trained = run.evaluator(split)(run.state.params)
  plain = plain_run(run)
  evaluator = plain.evaluator(split)
  replicated = parallel.replicated(run.mesh)
  result = {'method': METHOD, 'split': split, 'step': step, 'checkpoint': checkpoint,
            'group': group, 'trained_quant_bits': model.quant_bits,
            'trained_ppl': trained['ppl'],
            'trained_bytes': costs.vocab_bytes(model),
            **{f'trained_{name}_ppl': value for name, value in _group_ppl(trained).items()},
            'ppl_by_bits': {}, 'bytes_by_bits': {},
            **{f'{name}_ppl_by_bits': {} for name in (*GROUPINGS, 'frequent')}}
  for width in bits:
    params = jax.jit(lambda params, width=width: quantized_params(plain.model(params), width,
                                                                  group),
                     out_shardings=replicated)(run.state.params)
    scored = evaluator(params)
    result['ppl_by_bits'][str(width)] = scored['ppl']
    result['bytes_by_bits'][str(width)] = costs.vocab_bytes(quant_model(model, width, group))
    for name, value in _group_ppl(scored).items():
      result[f'{name}_ppl_by_bits'][str(width)] = value
    log.info('%s of %s, int%d (group %d): %s ppl %.3f (as trained %.3f).', METHOD, workdir,
             width, group, split, scored['ppl'], trained['ppl'])
  if jax.process_index() == 0:
    files.write_json_atomic(os.path.join(workdir, QUANT_FILE.format(split=split)), result)
    writer = MetricWriter(workdir)
    try:
      for width in bits:
        writer.scalars(width, {f'{METHOD}/{split}_ppl': result['ppl_by_bits'][str(width)]})
    finally:
      writer.close()
  return result
