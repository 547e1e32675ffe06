"""The `senso` command: the one entry point of the image and of development."""
