"""Data stage: BIDS datalist, data checks, shared preprocessing, caching and the synthetic demo dataset."""
