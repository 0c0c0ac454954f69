r"""Evaluates a trained run exactly (every token once) on its valid or test split.

  python eval.py --workdir=runs/svd64 --split=test [--checkpoint=best] [--stride=32]

Rebuilds the model and tokenizer from the config saved in the workdir, restores the
checkpoint, prints the result as JSON and writes workdir/eval_<split>.json.

Post-hoc SVD compression of a dense run (factorized/evaluation/posthoc.py): the trained embedding
(and the tied head) replaced by its best rank-R approximation, without retraining, and
optionally fine-tuned for N steps; writes workdir/posthoc_svd_<split>.json:

  python eval.py --workdir=runs/sweep/dense --svd_ranks=8,16,32,64,128 [--svd_finetune_steps=N]

Frequency-weighted (the rank-R approximation closest in train-frequency-weighted error;
posthoc_svd_freq_<split>.json), and with each frequency band its own rank at the same total
parameters (--svd_bands: frequency ranks where bands end; posthoc_svd_freq_bands_<split>.json):

  python eval.py --workdir=runs/sweep/dense --svd_ranks=8,16,32 --svd_weighting=frequency \
      [--svd_bands=1000,4000]

Post-training quantization of any run (factorized/evaluation/posthoc_quant.py): every
vocabulary table matrix (the dense W, each factor of every kind, an untied head) as int8 or
int4 with a float32 scale per row (or per --quant_group columns), scored exactly; writes
workdir/posthoc_quant_<split>.json:

  python eval.py --workdir=runs/svd64 --quant_bits=8,4 [--quant_group=32]
"""

import json
import sys

from absl import app, flags

from factorized.config import cli
from factorized.runtime.allocator import ensure_fast_malloc

flags.DEFINE_string('workdir', None, 'A training workdir (holds config.json and checkpoints/).')
flags.DEFINE_enum('split', 'test', ['valid', 'test'], 'Which split to evaluate.')
flags.DEFINE_string('checkpoint', 'best', 'best (by valid ppl: the one summary.json\'s '
                    'test_ppl uses), latest or a step number.')
flags.DEFINE_integer('stride', None, 'Sliding-window evaluation: windows of data.seq_len '
                     'tokens every STRIDE tokens, each token scored once with at least '
                     'seq_len - STRIDE tokens of context (default: seq_len, non-overlapping '
                     'windows, as in training).')
flags.DEFINE_list('svd_ranks', [], 'Post-hoc SVD of a dense run: ranks to truncate its '
                  'embedding to, e.g. 8,16,32 (no retraining).')
flags.DEFINE_integer('svd_finetune_steps', 0, 'With --svd_ranks: also fine-tune each '
                     'SVD-initialised model for this many steps and report its perplexity.')
flags.DEFINE_enum('svd_weighting', 'uniform', ['uniform', 'frequency'], 'With --svd_ranks: '
                  'uniform (the truncated SVD) or frequency (the rank-R approximation with the '
                  'least train-frequency-weighted error; rows posthoc_svd_freq).')
flags.DEFINE_list('svd_bands', [], 'With --svd_ranks: frequency ranks where bands of ids end, '
                  'e.g. 1000,4000; each band gets its own rank, frequent bands more, within '
                  'the parameters of the rank-R SVD (rows posthoc_svd[_freq]_bands).')
flags.DEFINE_list('quant_bits', [], 'Post-training quantization: bit widths to quantize '
                  'every vocabulary table of the run to, 8 and/or 4, e.g. 8,4 (no retraining).')
flags.DEFINE_integer('quant_group', 0, 'With --quant_bits: one float32 scale per this many '
                     'columns of a table (0: one per row).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_libraries()  # no dependency warnings unless --verbosity is given
  cli.check_workdir(FLAGS.workdir, must_exist=True)
  import jax

  from factorized.analysis import report as sweep_report
  from factorized.evaluation import posthoc, posthoc_quant
  from factorized.evaluation import saved as eval_run

  if FLAGS.svd_finetune_steps and not FLAGS.svd_ranks:
    raise app.UsageError('--svd_finetune_steps needs --svd_ranks.')
  if (FLAGS.svd_bands or FLAGS.svd_weighting != 'uniform') and not FLAGS.svd_ranks:
    raise app.UsageError('--svd_weighting and --svd_bands need --svd_ranks.')
  if FLAGS.stride is not None and (FLAGS.svd_ranks or FLAGS.quant_bits):
    raise app.UsageError('--stride applies to plain evaluation; drop it with --svd_ranks or '
                         '--quant_bits.')
  if FLAGS.quant_group and not FLAGS.quant_bits:
    raise app.UsageError('--quant_group needs --quant_bits.')
  if FLAGS.quant_bits and FLAGS.svd_ranks:
    raise app.UsageError('--quant_bits and --svd_ranks are separate runs of eval.py: give one.')
  try:
    if FLAGS.quant_bits:
      bits = posthoc_quant.parse_bits(FLAGS.quant_bits)
      result = posthoc_quant.posthoc_quant(FLAGS.workdir, FLAGS.split, bits,
                                           group=FLAGS.quant_group, checkpoint=FLAGS.checkpoint)
    elif FLAGS.svd_ranks:
      ranks = posthoc.parse_ranks(FLAGS.svd_ranks)
      result = posthoc.posthoc_svd(FLAGS.workdir, FLAGS.split, ranks, checkpoint=FLAGS.checkpoint,
                                   finetune_steps=FLAGS.svd_finetune_steps,
                                   weighting=FLAGS.svd_weighting, bands=FLAGS.svd_bands)
      if jax.process_index() == 0:  # a dense point of a sweep: its table gains the rows
        sweep_report.refresh_parent_reports(FLAGS.workdir)
    else:
      result = eval_run.evaluate_workdir(FLAGS.workdir, FLAGS.split, FLAGS.checkpoint,
                                         stride=FLAGS.stride)
  except FloatingPointError as error:  # NonFiniteLoss while fine-tuning
    sys.exit(f'error: {error}')
  except (ValueError, FileNotFoundError) as error:  # a flag, a file: named, exit 2
    cli.usage_error(str(error))
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  ensure_fast_malloc()  # re-execs once with a faster malloc; FACTORIZED_FAST_MALLOC=0: off
  app.run(main, flags_parser=cli.parse_flags)
