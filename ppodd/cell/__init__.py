"""One cell end to end: its identity, preparation, the stage loop, checkpoints, resume, record."""
