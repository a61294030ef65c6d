"""Command line of the data check: ``python -m scripts.data.check --dataset_dir D`` (see :mod:`.run`)."""

import fire

from scripts.data.check.run import main
from scripts.errors import install

install()
fire.Fire(main)
