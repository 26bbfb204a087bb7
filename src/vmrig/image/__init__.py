"""Node images: the content-addressed store, how its layers are built, and what is laid over them at boot."""
