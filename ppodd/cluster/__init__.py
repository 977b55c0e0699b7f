"""Grids of cells on a cluster: job files, the grid, Slurm arrays through submitit, local runs,
array tasks (in an Apptainer image or not), the manifest and the status of a results folder."""
