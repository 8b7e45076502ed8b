"""Pictures: sample grids, attention maps, the HTML report."""
