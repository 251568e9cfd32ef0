"""The ``cortex`` command line: thin typer commands over the library."""
