"""What a cell leaves on disk: the HDF5 run file and its record, checkpoints, cell locks, folders."""
