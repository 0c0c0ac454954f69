"""What train.py and eval.py share on the command line: flag parsing that turns a mistyped
`--config.*` override, a bad value or an unknown flag into one line and exit code 2, and
quiet libraries (no dependency warnings in normal use; `--verbosity=0` or higher shows
everything)."""

from __future__ import annotations

import difflib
import importlib.util
import logging as py_logging
import os
import pathlib
import re
import sys

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

EXIT_USAGE = 2
# Loggers whose messages are not for users unless they ask (--verbosity): JAX's backend
# probe (TPU/GPU plugins that this machine lacks) and orbax's bookkeeping.
_NOISY_LOGGERS = ('jax._src.xla_bridge', 'jax._src.distributed', 'jax._src.compiler')
_NOISY_PATHS = (f'{pathlib.Path("orbax")}/', f'{pathlib.Path("jax")}/_src/')


class _ConfigFileParser(flags.ArgumentParser):
  """The parser of `--config=<file>.py[:arg]`: executes the file once, returns its locked
  `get_config(arg)` and keeps the module, so that get_sweep() and error messages read that
  module instead of executing the file again."""

  def __init__(self):
    self.module = None

  def parse(self, argument: str) -> ml_collections.ConfigDict:
    self.module = load_module(argument.partition(':')[0])
    config = _get_config(self.module, argument)
    config.lock()
    return config

  def flag_type(self) -> str:
    return 'config object'


def _get_config(module, argument: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file's module, for `--config=<file>.py[:arg]` (no
  argument without a colon, as config_flags calls it)."""
  _, colon, arg = argument.partition(':')
  return module.get_config(*([arg] if colon else []))


def load_module(path: str):
  """Executes the config file at `path` (once per start: see define_config_flag)."""
  module_spec = importlib.util.spec_from_file_location(f'_config_{pathlib.Path(path).stem}', path)
  if module_spec is None or not pathlib.Path(path).is_file():
    raise FileNotFoundError(missing_config_file(path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def define_config_flag(name: str = 'config') -> None:
  """`--config=<file>.py[:arg]` with `--config.<field>=...` overrides (ml_collections'
  config_flags), the file executed once; `config_module()` gives the module it ran."""
  config_flags.DEFINE_config_file(
      name, None, 'Config file, optionally with an argument: configs/brown.py:kind=svd,rank=64',
      lock_config=True)
  flags.FLAGS[name].parser = _ConfigFileParser()


def config_module(name: str = 'config'):
  """The config file's module as `--config` executed it (None before flags are parsed)."""
  return getattr(flags.FLAGS[name].parser, 'module', None)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for `app.run(main, flags_parser=parse_flags)`; on a bad flag,
  prints `error: <what and the fix>` and exits with code 2 (no traceback)."""
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # noqa: BLE001 (flags.Error, or ml_collections' own errors)
    print(f'error: {explain(argv, error)}', file=sys.stderr)
    sys.exit(EXIT_USAGE)


def usage_error(message: str) -> None:
  """Prints `error: <message>` (one line: what is wrong, where, and the fix) and exits 2."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_USAGE)


def check_workdir(workdir: str, *, must_exist: bool = False) -> None:
  """A usage error unless `workdir` is a directory (or, unless must_exist, can become one)."""
  path = pathlib.Path(workdir)
  if path.exists() and not path.is_dir():
    usage_error(f'--workdir={workdir} is a file, not a directory; give a directory '
                '(train.py creates it when missing).')
  if must_exist and not path.is_dir():
    usage_error(f'--workdir={workdir} does not exist; give the workdir of a run (train.py '
                '--workdir=...).')
  parent = next((p for p in (path, *path.parents) if p.exists()), pathlib.Path('.'))
  if not must_exist and not os.access(parent, os.W_OK | os.X_OK):
    usage_error(f'--workdir={workdir}: {parent} is not writable; give a directory you can '
                'write to.')


def missing_config_file(spec: str) -> str | None:
  """The message when the file of `--config=<spec>` does not exist, else None."""
  path = spec.partition(':')[0]
  if pathlib.Path(path).is_file():
    return None
  known = sorted(str(p) for p in pathlib.Path('configs').glob('*.py')
                 if p.name not in ('__init__.py', 'common.py'))
  return (f'--config={spec}: no config file {path}; give one of '
          f'{", ".join(known) or "configs/<name>.py"}.')


def explain(argv: list[str], error: Exception) -> str:
  """One line for a flag error: the config file or argument at fault and why, or the
  override's field, its closest valid names, the file."""
  spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  overrides = [a[len('--config.'):] for a in argv if a.startswith('--config.')]
  if spec is not None:
    missing = missing_config_file(spec)
    if missing:
      return missing
    try:
      config = _load(spec)
    except Exception as cause:  # noqa: BLE001 (the config file or its argument is at fault)
      lines = str(cause).strip().splitlines()
      return f'--config={spec}: {lines[0] if lines else type(cause).__name__}'
    for override in overrides:
      key, _, value = override.partition('=')
      message = _check_override(config, key, value, spec)
      if message:
        return message
  text = str(error).strip().splitlines()
  return text[0] if text else repr(error)


def _load(spec: str) -> ml_collections.ConfigDict:
  """The config of `--config=<spec>`, from the module --config executed when it got that far."""
  module = ((config_module() if 'config' in flags.FLAGS else None)
            or load_module(spec.partition(':')[0]))
  return _get_config(module, spec)


def _check_override(config: ml_collections.ConfigDict, key: str, value: str,
                    spec: str) -> str | None:
  """The message for `--config.<key>=<value>`, or None when it is a valid override."""
  path = spec.partition(':')[0]
  node, walked = config, []
  for name in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      prefix = '.'.join(walked)
      close = difflib.get_close_matches(name, fields, n=3, cutoff=0.5)
      hint = (f'did you mean {", ".join(_dotted(prefix, c) for c in close)}?' if close else
              f'the fields there are {", ".join(_dotted(prefix, f) for f in fields)}.')
      return (f'--config.{key}: {path} has no field {_dotted(prefix, name)}; {hint}')
    node, walked = node[name], [*walked, name]
  expected = type(node)
  if isinstance(node, bool):
    ok = value.lower() in ('true', 'false', '1', '0', '')
  elif isinstance(node, (int, float)):
    ok = re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?', value.strip()) is not None
    ok = ok and (expected is float or re.fullmatch(r'[-+]?\d+', value.strip()) is not None)
  else:
    return None
  if ok:
    return None
  kind = {bool: 'a boolean', int: 'an integer', float: 'a number'}[expected]
  return (f'--config.{key}={value}: {key} takes {kind} in {path} (default {node!r}); '
          f'give {kind}.')


def _dotted(prefix: str, name: str) -> str:
  return f'{prefix}.{name}' if prefix else name


class _QuietFilter(py_logging.Filter):
  """Drops warnings and info that dependencies log through absl (orbax, JAX internals)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.ERROR:
      return True
    return not any(part in record.pathname for part in _NOISY_PATHS)


def quiet_libraries(verbosity: int | None = None) -> None:
  """With the user's --verbosity (given on the command line, or passed on to a sweep's
  job as `verbosity`): everything at that level; without: our warnings only, no
  dependency noise."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # a job process has no command line of its own
  if verbosity is None and flags.FLAGS['verbosity'].present:
    verbosity = flags.FLAGS.verbosity
  if verbosity is not None:
    logging.set_verbosity(verbosity)
    return
  logging.set_verbosity(logging.WARNING)
  for name in _NOISY_LOGGERS:
    py_logging.getLogger(name).setLevel(py_logging.ERROR)
  logging.get_absl_handler().addFilter(_QuietFilter())
