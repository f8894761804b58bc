"""What reports share: markdown tables, CSV files and matplotlib figures (experiments/, dglm/)."""
