"""Python helpers of the pvs_bundle MONAI Bundle: what the JSON configs cannot say."""
