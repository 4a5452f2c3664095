"""Reports: plots and tables made from results."""
