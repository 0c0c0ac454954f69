"""The config boundary: config-file arguments and command-line flags."""
