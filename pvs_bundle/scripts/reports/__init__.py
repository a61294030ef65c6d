"""Reports: figures and plots written beside the results."""
