"""Training with markers: marker client, NAS-Bench-201 cells, supernet, torchvision models, data, loops."""
