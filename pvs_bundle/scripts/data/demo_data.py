"""Command line of the synthetic demo dataset (:mod:`scripts.data.demo`), the command its README.txt names.

From ``pvs_bundle/``::

    python -m scripts.data.demo_data --out_dir D --n_subjects 16 --seed 0 [--shape "[96,128,112]"]
        [--contrast T1w] [--voxel_size_mm "[1,1,1]"]
"""

from __future__ import annotations

import logging

from scripts.data.demo.dataset import main

if __name__ == "__main__":
    import fire

    from scripts.errors import install

    install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    fire.Fire(main)
