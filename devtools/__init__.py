"""Development tooling, never part of the image: the engine emulator, `senso demo` and the
in-process servers the demo, the bench and the tests run the real API and worker with."""
