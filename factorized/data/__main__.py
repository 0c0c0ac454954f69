r"""Prepares a config's corpus (downloads, tokenises and caches it) and prints its statistics
(|V|, tokens, words and `<unk>` rate per split, cache path) as JSON, the only output on
stdout; logs go to stderr:

  python -m factorized.data --config=configs/brown.py
"""

import contextlib
import json
import sys

from absl import app, flags

from factorized.config import cli

cli.define_config_flag()
flags.mark_flag_as_required('config')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_libraries()  # no dependency warnings unless --verbosity is given
  from factorized.config import build
  from factorized.data import pipeline

  try:
    data_config = build.from_config(flags.FLAGS.config).data
    with contextlib.redirect_stdout(sys.stderr):  # what a library prints is not the JSON
      stats = pipeline.prepare_corpus(data_config).stats()
  except (ValueError, FileNotFoundError) as error:  # a config field, a file: named, exit 2
    cli.usage_error(str(error))
  print(json.dumps(stats, indent=1))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
