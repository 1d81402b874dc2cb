"""Training binary: `python -m tfrobustprune.train --config=configs/quickstart.py --workdir=DIR`.

Everything but the output directory comes from the config file; override a
field with `--config.train.epochs=3`. An invalid config or missing data stops
at once with one line naming the problem and exit code 2. Re-running with the
same `--workdir` resumes an interrupted run.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tfrobustprune import train_lib
from tfrobustprune.config_check import ConfigError
from tfrobustprune.data import DataError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, models and report.json.", required=True)


def main(argv):
    del argv  # everything comes from the config
    if _CONFIG.value is None:
        print("error: --config is required, e.g. --config=configs/quickstart.py", file=sys.stderr)
        sys.exit(2)
    logging.info("Config:\n%s", _CONFIG.value)
    try:
        train_lib.run(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
