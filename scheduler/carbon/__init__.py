"""Grid carbon-intensity providers behind one interface."""
