"""Point-cloud stages: reprojection lattice, spill files, level-of-detail sampling, colour."""
