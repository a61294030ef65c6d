"""Python helpers of the pvs_bundle MONAI Bundle: what the JSON configs cannot say.

The configs reach them by dotted path (``"_target_": "scripts.data.datalist.load_or_create_datalist"``), which is
resolved when the workflow runs, after MONAI has put the bundle root on ``sys.path``. Importing the package changes
nothing in the importer's process: the workflows install the bundle's one-line errors and warning filters in their
first step (:func:`scripts.errors.configure`), the command-line modules when they start.
"""
