r"""Evaluates a trained run exactly (every token once) on its valid or test split.

  python eval.py --workdir=runs/svd64 --split=test [--checkpoint=best]

Rebuilds the model and tokenizer from the config saved in the workdir, restores the
checkpoint, prints the result as JSON and writes workdir/eval_<split>.json.
"""

import json
import sys

from absl import app, flags

flags.DEFINE_string('workdir', None, 'A training workdir (holds config.json and checkpoints/).')
flags.DEFINE_enum('split', 'test', ['valid', 'test'], 'Which split to evaluate.')
flags.DEFINE_string('checkpoint', 'latest', 'latest, best (by valid ppl) or a step number.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from factorized import eval_run

  try:
    result = eval_run.evaluate_workdir(FLAGS.workdir, FLAGS.split, FLAGS.checkpoint)
  except (ValueError, FileNotFoundError) as error:
    sys.exit(f'error: {error}')
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  app.run(main)
