"""Training binary: `python -m tfrobustprune.train --config=configs/quickstart.py --workdir=DIR`.

Everything but the output directory comes from the config file; override a
field with `--config.train.epochs=3`. An invalid config or missing data stops
at once with one line naming the problem and exit code 2; a non-finite loss
stops the run on its last good checkpoint with exit code 1. Re-running with the
same `--workdir` resumes an interrupted run.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tfrobustprune import config_check, train_lib
from tfrobustprune.config_check import ConfigError
from tfrobustprune.data import DataError
from tfrobustprune.model_io import ModelFileError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, models and report.json.", required=True)


def main(argv):
    del argv  # everything comes from the config
    if _CONFIG.value is None:
        print("error: --config is required, e.g. --config=configs/quickstart.py", file=sys.stderr)
        sys.exit(2)
    try:
        config_check.validate(_CONFIG.value)
        logging.info("Config:\n%s", _CONFIG.value)
        train_lib.run(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, DataError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except train_lib.TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
